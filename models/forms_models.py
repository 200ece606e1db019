"""Attention written the ways users write it outside HuggingFace's eager code: torch.nn's
TransformerEncoder / MultiheadAttention / TransformerDecoder (slow path traced with grad, fused
path traced under no_grad, scripted), fairseq's MultiheadAttention (heads folded into the batch,
bmm), einsum forms, a scaled key, a key permuted upstream, a tied LM head, a cross-attention
decoder. Registered in make_models.MODEL_MODULES; models/README.md ("Other attention forms")
describes them.

The references do not come from the model code: forward pre-hooks on the attention modules
record their inputs, and q / k are recomputed from those inputs with the module's own projection
weights (plain matmul + bias, head split, unscaled, SPEC 1). Each builder also checks that the
logits the model feeds its softmax equal prescale * q.k at unmasked positions (a dispatch mode
records the softmax inputs), and that the traced graph computes the scores with the op that the
metadata `layer{L}.form` names.
"""

import math

import torch
from torch import nn

from export_common import Export, init_weights, text_inputs
from forms_common import (
    SLOW_PATH_FORM,
    check_prescale,
    expect_form,
    fused_layer_inputs,
    fix_mha_init,
    inlined,
    padding_allowed,
    pre_hooks,
    project,
    softmax_logits,
    split_heads,
    trace,
    visible_sdpa_logits,
)

VOCAB, EMBED, HEADS, FFN, MAX_POS = 100, 32, 4, 64, 64
HEAD_DIM = EMBED // HEADS
# Refs of these models are not in the HF-eager shape inspect_graphs.py's matching rule expects.
NO_INSPECT = {"inspect": "no"}


def positions(input_ids):
    return torch.arange(input_ids.size(1), device=input_ids.device)


# --- torch.nn models ------------------------------------------------------------------------


class NNEncoderModel(nn.Module):
    """Token + learned position embeddings, nn.TransformerEncoder (post-norm, ReLU)."""

    def __init__(self, batch_first=True, nested=False, layers=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.pos = nn.Embedding(MAX_POS, EMBED)
        layer = nn.TransformerEncoderLayer(d_model=EMBED, nhead=HEADS, dim_feedforward=FFN, dropout=0.0,
                                           batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=nested)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids) + self.pos(positions(input_ids))[None]
        return (self.encoder(x, src_key_padding_mask=attention_mask == 0),)


class NNEncoderSeqFirstModel(NNEncoderModel):
    """The same with batch_first=False: transposed to [T, B, E] around the encoder."""

    def __init__(self):
        super().__init__(batch_first=False)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids) + self.pos(positions(input_ids))[None]
        h = self.encoder(x.transpose(0, 1), src_key_padding_mask=attention_mask == 0)
        return (h.transpose(0, 1),)


class MHABlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim=EMBED, num_heads=HEADS, batch_first=True)
        self.norm = nn.LayerNorm(EMBED)

    def forward(self, x, causal, padding):
        attended, _ = self.attn(x, x, x, attn_mask=causal, key_padding_mask=padding)
        return self.norm(x + attended)


class NNMHAModel(nn.Module):
    """Two causal self-attention blocks on nn.MultiheadAttention with a float attn_mask and a
    key_padding_mask."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.pos = nn.Embedding(MAX_POS, EMBED)
        self.layers = nn.ModuleList([MHABlock() for _ in range(2)])

    def forward(self, input_ids, attention_mask):
        seq = input_ids.size(1)
        x = self.embed(input_ids) + self.pos(positions(input_ids))[None]
        causal = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
        padding = attention_mask == 0
        for layer in self.layers:
            x = layer(x, causal, padding)
        return (x,)


class NNCrossDecoderModel(nn.Module):
    """nn.TransformerDecoder (1 layer): causal self-attention over 12 tokens, cross-attention
    to a 7-token memory embedded from input_ids[:, :7]."""

    MEMORY = 7

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.memory_embed = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.pos = nn.Embedding(MAX_POS, EMBED)
        layer = nn.TransformerDecoderLayer(d_model=EMBED, nhead=HEADS, dim_feedforward=FFN, dropout=0.0,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=1)

    def forward(self, input_ids, attention_mask):
        seq = input_ids.size(1)
        tgt = self.embed(input_ids) + self.pos(positions(input_ids))[None]
        memory_ids = input_ids[:, : self.MEMORY]
        memory = self.memory_embed(memory_ids) + self.pos(positions(memory_ids))[None]
        causal = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
        h = self.decoder(tgt, memory, tgt_mask=causal, tgt_key_padding_mask=attention_mask == 0,
                         memory_key_padding_mask=attention_mask[:, : self.MEMORY] == 0)
        return (h,)


def mha_qk(attn, x, batch_first):
    """q, k [B, H, S, D] of an nn.MultiheadAttention self-attention call on x, unscaled."""
    if not batch_first:
        x = x.transpose(0, 1)
    embed = attn.embed_dim
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q = project(x, weight[:embed], bias[:embed])
    k = project(x, weight[embed : 2 * embed], bias[embed : 2 * embed])
    return split_heads(q, attn.num_heads), split_heads(k, attn.num_heads)


def nn_reference(stem, model, inputs, sites, batch_first=True, causal=False, slow_output=True):
    """q/k of the nn.MultiheadAttention modules `sites` from pre-hooks on them, taken on torch.nn's
    slow path (grad enabled: the modules are called and see their inputs); the prescale checked
    against the slow path's softmax logits. The output comes from the slow path, or from the
    path a no-grad run takes (slow_output=False: the fused one, which the traced file holds)."""
    modules = dict(model.named_modules())

    def run():
        with torch.enable_grad(), pre_hooks(model, sites) as calls, visible_sdpa_logits():
            output, logits, _ = softmax_logits(lambda: model(*inputs.values())[0].detach())
        pairs = [mha_qk(modules[name], args[0], batch_first) for name, args in calls]
        if [name for name, _ in calls] != list(sites):
            raise RuntimeError(f"{stem}: attention modules ran as {[n for n, _ in calls]}, expected {sites}")
        # Softmax calls: one per MHA call in execution order; keep the self-attention ones.
        allowed = padding_allowed(inputs["attention_mask"], causal)
        for layer, (q, k) in enumerate(pairs):
            check_prescale(stem, layer, logits[layer], q, k, 1 / math.sqrt(HEAD_DIM), allowed)
        if not slow_output:
            with torch.no_grad():  # the path a no-grad run of the file takes: the fused one
                output = model(*inputs.values())[0]
        return output, pairs

    return run


def encoder_sites(layers=2):
    return [f"encoder.layers.{i}.self_attn" for i in range(layers)]


def nn_export(stem, model, inputs, sites, form, trace_with_grad=True, causal=False, batch_first=True,
              scripted=False, slow_output=True, skipped=()):
    fix_mha_init(init_weights(model))
    prescale = repr(1 / math.sqrt(HEAD_DIM))
    extra = dict(NO_INSPECT, **{f"layer{i}.form": form for i in range(len(sites))})
    if skipped:
        extra["skipped_modules"] = ",".join(skipped)
    return Export(
        family=stem,
        model=model,
        inputs=inputs,
        n_layers=len(sites),
        n_heads=HEADS,
        head_dim=HEAD_DIM,
        layer_prescales=[prescale] * len(sites),
        layer_modules=list(sites),
        reference=nn_reference(stem, model, inputs, sites, batch_first, causal, slow_output),
        trace_with_grad=trace_with_grad,
        check_trace=not trace_with_grad,  # the re-check re-traces under no_grad: another path
        scripted=scripted,
        extra_metadata=extra,
    )


def slow_scores_shape(inputs, src=None):
    batch, seq = inputs["input_ids"].shape
    return (batch * HEADS, seq, seq if src is None else src)


def nn_encoder_export():
    inputs = text_inputs(VOCAB)
    export = nn_export("nn_encoder", NNEncoderModel(), inputs, encoder_sites(), SLOW_PATH_FORM)
    graph = inlined(trace(export.model, inputs, with_grad=True))
    expect_form("nn_encoder", graph, SLOW_PATH_FORM, 2, slow_scores_shape(inputs),
                absent=("aten::_transformer_encoder_layer_fwd",))
    return export


def nn_encoder_seq_first_export():
    inputs = text_inputs(VOCAB)
    model = NNEncoderSeqFirstModel()
    export = nn_export("nn_encoder_seq_first", model, inputs, encoder_sites(), SLOW_PATH_FORM,
                       batch_first=False)
    graph = inlined(trace(model, inputs, with_grad=True))
    expect_form("nn_encoder_seq_first", graph, SLOW_PATH_FORM, 2, slow_scores_shape(inputs),
                absent=("aten::_transformer_encoder_layer_fwd",))
    return export


def fused_layer_inputs_check(stem, export):
    """The fused path never calls self_attn: take the fused ops' inputs at dispatch (nested
    tensors padded with 0), recompute q/k there and compare with the slow-path references at
    real tokens."""
    model, inputs = export.model, export.inputs
    layers = [f"encoder.layers.{i}" for i in range(len(export.layer_modules))]
    with torch.no_grad():
        fused_inputs = fused_layer_inputs(lambda: model(*inputs.values()))
    if len(fused_inputs) != len(layers):
        raise RuntimeError(f"{stem}: the no-grad eager run did not take the fused path")
    _, pairs = export.reference()
    real = inputs["attention_mask"].bool()[:, None, :, None]
    modules = dict(model.named_modules())
    for layer, (name, src) in enumerate(zip(layers, fused_inputs)):
        x = src.to_padded_tensor(0.0, inputs["input_ids"].shape + (EMBED,)) if src.is_nested else src
        q, k = mha_qk(modules[name].self_attn, x, True)
        diff = max((q - pairs[layer][0]).abs().masked_select(real).max().item(),
                   (k - pairs[layer][1]).abs().masked_select(real).max().item())
        if diff > 1e-5:
            raise RuntimeError(f"{stem} layer {layer}: fused-path q/k differ from the slow path by {diff:.3g}")


def nn_encoder_fused_export(nested=False):
    stem = "nn_encoder_fused_nested" if nested else "nn_encoder_fused"
    inputs = text_inputs(VOCAB)
    model = NNEncoderModel(nested=nested)
    export = nn_export(stem, model, inputs, encoder_sites(), "fused", trace_with_grad=False, slow_output=False)
    fused_layer_inputs_check(stem, export)
    graph = inlined(trace(model, inputs, with_grad=False))
    expect_form(stem, graph, "fused", 2, absent=("aten::baddbmm", "aten::bmm"))
    has_nested = any(n.kind() == "aten::_nested_tensor_from_mask" for n in graph.nodes())
    if has_nested != nested:
        raise RuntimeError(f"{stem}: aten::_nested_tensor_from_mask {'missing' if nested else 'present'}")
    return export


def nn_encoder_scripted_export():
    """Scripted: both paths under prim::If; a no-grad / inference-mode run takes the fused one."""
    stem = "nn_encoder_scripted"
    inputs = text_inputs(VOCAB)
    model = NNEncoderModel()
    export = nn_export(stem, model, inputs, encoder_sites(), "fused", scripted=True, slow_output=False)
    scripted = torch.jit.script(model)
    graph = inlined(scripted)
    # Per layer: the fused op, and the slow path's baddbmm (masked) / bmm (no mask) scores,
    # each twice, as _sa_block is inlined in both branches of `if self.norm_first`.
    expect_form(stem, graph, "fused", 2)
    if SLOW_PATH_FORM == "baddbmm":  # torch 2.x holds SDPA and the need_weights products too
        expect_form(stem, graph, "baddbmm", 4)
    with torch.inference_mode():
        for _ in range(3):  # the profiling executor optimizes from the second run
            got = scripted(*inputs.values())[0]
        ran = torch.jit.last_executed_optimized_graph().str()
    with torch.no_grad():
        want = model(*inputs.values())[0]
    diff = (got - want).abs().max().item()
    if diff > 1e-5 or "_transformer_encoder_layer_fwd" not in ran:
        raise RuntimeError(f"{stem}: inference-mode run differs from eager by {diff:.3g} or was not fused")
    return export


def nn_mha_export():
    inputs = text_inputs(VOCAB)
    model = NNMHAModel()
    sites = [f"layers.{i}.attn" for i in range(2)]
    export = nn_export("nn_mha", model, inputs, sites, "baddbmm", causal=True)
    graph = inlined(trace(model, inputs, with_grad=True))
    expect_form("nn_mha", graph, "baddbmm", 2, slow_scores_shape(inputs))
    return export


def cross_decoder_export():
    stem = "cross_decoder"
    inputs = text_inputs(VOCAB)
    model = NNCrossDecoderModel()
    site, cross = "decoder.layers.0.self_attn", "decoder.layers.0.multihead_attn"
    export = nn_export(stem, model, inputs, [site], SLOW_PATH_FORM, causal=True, skipped=(cross,))
    graph = inlined(trace(model, inputs, with_grad=True))
    if SLOW_PATH_FORM == "sdpa":  # SDPA's output is [B, H, T, D]: self- and cross-attention
        expect_form(stem, graph, "sdpa", 2)
    else:
        expect_form(stem, graph, "baddbmm", 1, slow_scores_shape(inputs))
        expect_form(stem, graph, "baddbmm", 1, slow_scores_shape(inputs, NNCrossDecoderModel.MEMORY))
    return export


# --- hand-written attention modules ----------------------------------------------------------


class FairseqMultiheadAttention(nn.Module):
    """fairseq.modules.MultiheadAttention's self-attention path (time-first input)."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout_module = nn.Dropout(0.1)

    def forward(self, query, key_padding_mask):
        tgt_len, bsz, embed_dim = query.size()
        q = self.q_proj(query)
        k = self.k_proj(query)
        v = self.v_proj(query)
        q *= self.scaling
        q = q.contiguous().view(tgt_len, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        src_len = k.size(1)
        attn_weights = torch.bmm(q, k.transpose(1, 2))
        attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len)
        attn_weights = attn_weights.masked_fill(key_padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool),
                                                float("-inf"))
        attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights_float = torch.softmax(attn_weights, dim=-1, dtype=torch.float32)
        attn_weights = attn_weights_float.type_as(attn_weights)
        attn_probs = self.dropout_module(attn_weights)
        attn = torch.bmm(attn_probs, v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        attn = self.out_proj(attn)
        return attn, None

    def reference_qk(self, query):
        """Recompute q, k [B, H, T, D] from the time-first input, unscaled."""
        x = query.transpose(0, 1)
        return (split_heads(project(x, self.q_proj.weight, self.q_proj.bias), self.num_heads),
                split_heads(project(x, self.k_proj.weight, self.k_proj.bias), self.num_heads))


class FairseqEncoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = FairseqMultiheadAttention(EMBED, HEADS)
        self.self_attn_layer_norm = nn.LayerNorm(EMBED)
        self.fc1 = nn.Linear(EMBED, FFN)
        self.fc2 = nn.Linear(FFN, EMBED)
        self.final_layer_norm = nn.LayerNorm(EMBED)

    def forward(self, x, encoder_padding_mask):
        residual = x
        x, _ = self.self_attn(x, encoder_padding_mask)
        x = self.self_attn_layer_norm(residual + x)
        residual = x
        x = self.fc2(torch.relu(self.fc1(x)))
        return self.final_layer_norm(residual + x)


class FairseqEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.embed_positions = nn.Embedding(MAX_POS, EMBED)
        self.layernorm_embedding = nn.LayerNorm(EMBED)
        self.layers = nn.ModuleList([FairseqEncoderLayer() for _ in range(2)])

    def forward(self, input_ids, attention_mask):
        x = self.embed_tokens(input_ids) + self.embed_positions(positions(input_ids))[None]
        x = self.layernorm_embedding(x)
        encoder_padding_mask = attention_mask.eq(0)
        x = x.transpose(0, 1)  # B x T x C -> T x B x C
        for layer in self.layers:
            x = layer(x, encoder_padding_mask)
        return (x.transpose(0, 1),)


class Attention(nn.Module):
    """Self-attention with separate q/k/v/o projections in one of several user styles."""

    def __init__(self, style):
        super().__init__()
        self.style = style
        self.n_heads = HEADS
        self.head_dim = HEAD_DIM
        self.scale = HEAD_DIM**-0.5
        self.q_proj = nn.Linear(EMBED, EMBED)
        self.k_proj = nn.Linear(EMBED, EMBED)
        self.v_proj = nn.Linear(EMBED, EMBED)
        self.o_proj = nn.Linear(EMBED, EMBED)

    def forward(self, x, mask):
        """x [B, T, E]; mask [B, 1, 1, T] additive (0 or finfo.min)."""
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq, self.n_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.n_heads, self.head_dim)
        if self.style == "einsum_bqhd":
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * self.scale
            probs = torch.softmax(scores + mask, dim=-1)
            out = torch.einsum("bhqk,bkhd->bqhd", probs, v)
        else:
            q, v = q.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
            if self.style == "einsum_bhid":
                q = q * self.head_dim**-0.25
                k = k.permute(0, 2, 1, 3) * self.head_dim**-0.25
                scores = torch.einsum("bhid,bhjd->bhij", q, k)
            elif self.style == "k_scaled":
                k = k.permute(0, 2, 1, 3)
                scores = torch.matmul(q, (k * self.head_dim**-0.5).transpose(-1, -2))
            elif self.style == "k_permuted":
                k = k.permute(0, 2, 3, 1)  # [B, H, D, T]: already transposed for the product
                scores = torch.matmul(q, k) / math.sqrt(self.head_dim)
            else:  # "hf": BERT's eager attention
                k = k.permute(0, 2, 1, 3)
                scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            probs = torch.softmax(scores + mask, dim=-1)
            out = torch.matmul(probs, v).permute(0, 2, 1, 3)
        return self.o_proj(out.reshape(batch, seq, self.n_heads * self.head_dim))

    def reference_qk(self, x):
        return (split_heads(project(x, self.q_proj.weight, self.q_proj.bias), self.n_heads),
                split_heads(project(x, self.k_proj.weight, self.k_proj.bias), self.n_heads))


class Block(nn.Module):
    def __init__(self, style):
        super().__init__()
        self.attn = Attention(style)
        self.norm1 = nn.LayerNorm(EMBED)
        self.mlp = nn.Sequential(nn.Linear(EMBED, FFN), nn.GELU(), nn.Linear(FFN, EMBED))
        self.norm2 = nn.LayerNorm(EMBED)

    def forward(self, x, mask):
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.mlp(x))


class StyleModel(nn.Module):
    """Embeddings, `layers` post-norm blocks of one attention style; with `tied`, also the
    logits of an LM head tied to the token embedding (a 2-D parameter, transposed)."""

    def __init__(self, style, layers=2, tied=False):
        super().__init__()
        self.tied = tied
        self.embed = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.pos = nn.Embedding(MAX_POS, EMBED)
        self.layers = nn.ModuleList([Block(style) for _ in range(layers)])

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids) + self.pos(positions(input_ids))[None]
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask)
        if self.tied:
            return (x, x @ self.embed.weight.transpose(-1, -2))
        return (x,)


def own_reference(stem, model, inputs, sites, prescale, time_first=False):
    """q/k from pre-hooks on the attention modules `sites` (their `reference_qk` recomputes
    them from the hooked input with the projection weights); prescale checked on the logits."""
    modules = dict(model.named_modules())

    def run():
        with pre_hooks(model, sites) as calls:
            output, logits, _ = softmax_logits(lambda: model(*inputs.values())[0])
        if [name for name, _ in calls] != list(sites) or len(logits) != len(sites):
            raise RuntimeError(f"{stem}: {len(calls)} attention calls / {len(logits)} softmaxes, expected {len(sites)}")
        pairs = [modules[name].reference_qk(args[0]) for name, args in calls]
        allowed = padding_allowed(inputs["attention_mask"])
        for layer, (q, k) in enumerate(pairs):
            check_prescale(stem, layer, logits[layer], q, k, prescale, allowed)
        return output, pairs

    return run


def own_export(stem, model, sites, prescale, form, scores_shape, n_form_ops=None):
    inputs = text_inputs(VOCAB)
    init_weights(model)
    graph = inlined(trace(model, inputs, with_grad=False))
    expect_form(stem, graph, form, len(sites) if n_form_ops is None else n_form_ops, scores_shape)
    return Export(
        family=stem,
        model=model,
        inputs=inputs,
        n_layers=len(sites),
        n_heads=HEADS,
        head_dim=HEAD_DIM,
        layer_prescales=[repr(prescale)] * len(sites),
        layer_modules=list(sites),
        reference=own_reference(stem, model, inputs, sites, prescale),
        extra_metadata=dict(NO_INSPECT, **{f"layer{i}.form": form for i in range(len(sites))}),
    )


def scores_4d():
    batch, seq = text_inputs(VOCAB)["input_ids"].shape
    return (batch, HEADS, seq, seq)


def fairseq_export():
    sites = [f"layers.{i}.self_attn" for i in range(2)]
    batch, seq = text_inputs(VOCAB)["input_ids"].shape
    return own_export("fairseq", FairseqEncoder(), sites, HEAD_DIM**-0.5, "bmm", (batch * HEADS, seq, seq))


def style_export(style, prescale, form):
    sites = [f"layers.{i}.attn" for i in range(2)]
    return lambda: own_export(style, StyleModel(style), sites, prescale, form, scores_4d())


def tied_lm_export():
    # Two 3-D matmuls in the graph beside the score product: probs x values and the tied head.
    return own_export("tied_lm", StyleModel("hf", layers=1, tied=True), ["layers.0.attn"],
                      1 / math.sqrt(HEAD_DIM), "matmul", scores_4d())


EXPORTS = {
    "nn_encoder": nn_encoder_export,
    "nn_encoder_seq_first": nn_encoder_seq_first_export,
    "nn_mha": nn_mha_export,
    "nn_encoder_scripted": nn_encoder_scripted_export,
    "nn_encoder_fused": nn_encoder_fused_export,
    "nn_encoder_fused_nested": lambda: nn_encoder_fused_export(nested=True),
    "fairseq": fairseq_export,
    "einsum_bqhd": style_export("einsum_bqhd", HEAD_DIM**-0.5, "einsum"),
    "einsum_bhid": style_export("einsum_bhid", HEAD_DIM**-0.25 * HEAD_DIM**-0.25, "einsum"),
    "k_scaled": style_export("k_scaled", HEAD_DIM**-0.5, "matmul"),
    "k_permuted": style_export("k_permuted", 1 / math.sqrt(HEAD_DIM), "matmul"),
    "tied_lm": tied_lm_export,
    "cross_decoder": cross_decoder_export,
}
