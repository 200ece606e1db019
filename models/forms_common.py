"""Helpers shared by forms_models.py and decoder_models.py: independent q/k references taken
with forward pre-hooks on the attention modules (q and k recomputed from the hooked input and
the module's own projection weights with plain torch ops), a check of the prescale against the
logits the model really feeds its softmax, and checks of the op that computes the scores in a
traced / scripted graph."""

import math
import warnings
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

ATOL = 1e-5
# Ops that compute a score product, by the `form` names of the ref metadata.
FORM_OPS = {
    "matmul": "aten::matmul",
    "bmm": "aten::bmm",
    "baddbmm": "aten::baddbmm",
    "einsum": "aten::einsum",
    "fused": "aten::_transformer_encoder_layer_fwd",
    "sdpa": "aten::scaled_dot_product_attention",
}


def math_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention written out (eval: no dropout), so that its logits pass
    through a softmax the reference can see. torch 2.x's nn.MultiheadAttention calls SDPA when
    need_weights is False (nn.TransformerEncoderLayer / DecoderLayer do)."""
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    if enable_gqa and k.size(-3) != q.size(-3):
        k = k.repeat_interleave(q.size(-3) // k.size(-3), -3)
        v = v.repeat_interleave(q.size(-3) // v.size(-3), -3)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if is_causal:
        causal = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.matmul(torch.softmax(scores, -1), v)


@contextmanager
def visible_sdpa_logits():
    """While active, torch.nn's calls of SDPA go through math_sdpa (torch 2.x); a no-op on 1.13."""
    functional = torch.nn.functional
    if not hasattr(functional, "scaled_dot_product_attention"):
        yield
        return
    original = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = math_sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


# torch 2.x lowers nn.MultiheadAttention's slow path to SDPA when need_weights is False.
SLOW_PATH_FORM = "sdpa" if hasattr(torch.nn.functional, "scaled_dot_product_attention") else "baddbmm"


def fix_mha_init(model):
    """export_common.init_weights treats nn.MultiheadAttention's bare `in_proj_weight` like a
    ViT token (std 0.5) and `in_proj_bias` like a norm gain (~1): rescale them like a Linear."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                module.in_proj_weight.normal_(0.0, module.embed_dim**-0.5)
                if module.in_proj_bias is not None:
                    module.in_proj_bias.normal_(0.0, 0.1)
    return model


def split_heads(x, n_heads):
    """[B, S, E] -> [B, H, S, E / H]."""
    batch, seq, embed = x.shape
    return x.reshape(batch, seq, n_heads, embed // n_heads).permute(0, 2, 1, 3).contiguous()


def project(x, weight, bias):
    """x @ weight^T + bias with plain ops (weight [out, in] as nn.Linear stores it)."""
    y = torch.matmul(x, weight.t())
    return y if bias is None else y + bias


@contextmanager
def pre_hooks(model, names):
    """Record the positional inputs of the named modules, in call order: yields a list of
    (name, args) with the args detached and cloned."""
    calls = []
    handles = []
    modules = dict(model.named_modules())
    for name in names:
        def hook(module, args, name=name):
            calls.append((name, tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)))
        handles.append(modules[name].register_forward_pre_hook(hook))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


class _SoftmaxInputs(TorchDispatchMode):
    """Record the input of every aten softmax (the attention logits after masks)."""

    def __init__(self):
        super().__init__()
        self.logits = []
        self.ops = []
        self.fused_inputs = []  # input 0 of each fused encoder layer op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.ops.append(name)
        if name.startswith("aten._softmax") or name.startswith("aten.softmax"):
            self.logits.append(args[0].detach().clone())
        if name.startswith("aten._transformer_encoder_layer_fwd"):
            self.fused_inputs.append(args[0].detach().clone())
        return func(*args, **(kwargs or {}))


def fused_layer_inputs(fn):
    """Run fn() and return [input 0 of each aten::_transformer_encoder_layer_fwd call]. Seen at
    dispatch, not with module hooks: torch 2.x leaves the fused path when a layer has hooks."""
    mode = _SoftmaxInputs()
    with mode:
        fn()
    return mode.fused_inputs


def softmax_logits(fn):
    """Run fn() and return (its result, [softmax inputs in call order], [aten ops run])."""
    mode = _SoftmaxInputs()
    with mode:
        result = fn()
    return result, mode.logits, mode.ops


def check_prescale(stem, layer, logits, q, k, prescale, allowed):
    """The model's softmax input at allowed positions must be prescale * q.k (masks add 0 there).
    logits [B, H, T, S] or heads folded [B*H, T, S]; q [B, H, T, D]; k [B, H, S, D];
    allowed broadcastable to [B, H, T, S]."""
    batch, heads, tgt, _ = q.shape
    logits = logits.reshape(batch, heads, tgt, k.shape[2]).float()
    expected = prescale * torch.matmul(q.double(), k.double().transpose(-1, -2))
    allowed = allowed.expand_as(logits)
    diff = (logits.double() - expected)[allowed].abs().max().item()
    spread = expected[allowed].std().item()
    if not diff <= ATOL:
        raise RuntimeError(f"{stem} layer {layer}: model logits differ from prescale*q.k by {diff:.3g}")
    if not 0.3 < spread < 10.0:
        raise RuntimeError(f"{stem} layer {layer}: score spread {spread:.3g} is not O(1)")
    return diff


def padding_allowed(attention_mask, causal=False):
    """[B, 1, T, S] bool: key j is real (and j <= i when causal)."""
    allowed = attention_mask.bool()[:, None, None, :]
    if causal:
        seq = attention_mask.shape[1]
        allowed = allowed & torch.ones(seq, seq, dtype=torch.bool).tril()[None, None]
    return allowed


def trace(model, inputs, with_grad):
    """As make_models.to_torchscript traces (without the re-check)."""
    with warnings.catch_warnings(), torch.set_grad_enabled(with_grad):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, tuple(inputs.values()), check_trace=False)


def inlined(module):
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def all_nodes(block):
    """Nodes of a graph or block, recursing into prim::If / prim::Loop blocks."""
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from all_nodes(sub)


def out_sizes(node):
    sizes = node.output().type().sizes() if node.output().type().kind() == "TensorType" else None
    return tuple(sizes) if sizes is not None else None


def expect_form(stem, graph, form, count, scores_shape=None, absent=()):
    """The graph holds exactly `count` `form` ops (those of output `scores_shape` when given,
    which separates the score product from probs x values) and none of `absent`."""
    kind = FORM_OPS[form]
    nodes = [n for n in all_nodes(graph) if n.kind() == kind]
    if scores_shape is not None and form != "sdpa":  # SDPA returns the attention output
        nodes = [n for n in nodes if out_sizes(n) == tuple(scores_shape)]
    if len(nodes) != count:
        raise RuntimeError(f"{stem}: {len(nodes)} {kind} score ops in the graph, expected {count}")
    present = [k for k in absent if any(n.kind() == k for n in all_nodes(graph))]
    if present:
        raise RuntimeError(f"{stem}: the graph unexpectedly holds {present}")
    return nodes
