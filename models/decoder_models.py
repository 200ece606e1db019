"""A GPT-2-style causal decoder with a key/value cache, traced once so that one file serves the
prompt (no past) and the cached decoding steps (one new token): `gpt2_cache`. Registered in
make_models.MODEL_MODULES; models/README.md ("Other attention forms") describes it.

forward(input_ids [B, T], attention_mask [B, P + T], past_k [L, B, H, P, D], past_v [L, B, H, P, D])
-> (logits [B, T, V], present_k [L, B, H, P + T, D], present_v [L, B, H, P + T, D]).

The inputs file holds the LEFT-padded prompts (lengths 7, 5, 3, pad id 0) with empty pasts
(P = 0), so `make_models.py --check` runs the prompt forward. The ref holds the q/k of ONE
forward over the whole greedily generated sequences [B, 7 + 12] (SPEC 1: a sequence generated
over many forwards is captured as if it had been run in one), taken with forward pre-hooks on
the attention modules and recomputed from c_attn's weights; the generated ids are in the
metadata (`generated_ids`, JSON), since the ref may hold only `output` and the layer tensors.
"""

import json
import math
import warnings

import torch
from torch import nn

from export_common import INPUT_SEED, PAD_ID, Export, init_weights
from forms_common import check_prescale, expect_form, inlined, pre_hooks, softmax_logits
from hf_gpt2 import Conv1D

VOCAB, EMBED, HEADS, LAYERS, FFN, MAX_POS = 100, 32, 4, 2, 64, 64
HEAD_DIM = EMBED // HEADS
PROMPT_LENGTHS, NEW_TOKENS = (7, 5, 3), 12
# Trace example: P > 0 past positions and T > 1 new ones, so that no size is baked in.
TRACE_PAST, TRACE_NEW = 3, 4


class CachedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.n_head = HEADS
        self.head_dim = HEAD_DIM
        self.split_size = EMBED
        self.c_attn = Conv1D(3 * EMBED, EMBED)
        self.c_proj = Conv1D(EMBED, EMBED)

    def _split_heads(self, x):
        return x.view(x.size()[:-1] + (self.n_head, self.head_dim)).permute(0, 2, 1, 3)

    def forward(self, hidden_states, past_key, past_value, attention_bias):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query = self._split_heads(query)
        key = torch.cat((past_key, self._split_heads(key)), dim=-2)
        value = torch.cat((past_value, self._split_heads(value)), dim=-2)
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        attn_weights = attn_weights / math.sqrt(self.head_dim)
        attn_weights = nn.functional.softmax(attn_weights + attention_bias, dim=-1)
        out = torch.matmul(attn_weights, value).permute(0, 2, 1, 3).contiguous()
        out = out.view(out.size()[:-2] + (self.n_head * self.head_dim,))
        return self.c_proj(out), key, value

    def reference_qk(self, hidden_states):
        """q, k [B, H, T, D] of the new positions, from the hooked input and c_attn's weight."""
        qkv = torch.matmul(hidden_states, self.c_attn.weight) + self.c_attn.bias
        batch, seq, _ = hidden_states.shape
        heads = [qkv[..., i * EMBED : (i + 1) * EMBED].reshape(batch, seq, HEADS, HEAD_DIM).permute(0, 2, 1, 3)
                 for i in range(2)]
        return heads[0], heads[1]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = Conv1D(FFN, EMBED)
        self.c_proj = Conv1D(EMBED, FFN)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(EMBED)
        self.attn = CachedAttention()
        self.ln_2 = nn.LayerNorm(EMBED)
        self.mlp = MLP()

    def forward(self, x, past_key, past_value, attention_bias):
        attended, key, value = self.attn(self.ln_1(x), past_key, past_value, attention_bias)
        x = x + attended
        return x + self.mlp(self.ln_2(x)), key, value


class CachedGPT2(nn.Module):
    """Learned positions from the mask (left padding), causal + padding additive bias built from
    tensor sizes only, tied LM head."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, EMBED)
        self.wpe = nn.Embedding(MAX_POS, EMBED)
        self.h = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(EMBED)

    def forward(self, input_ids, attention_mask, past_k, past_v):
        seq = input_ids.size(1)
        total = attention_mask.size(1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        position_ids = position_ids.narrow(1, total - seq, seq)
        x = self.wte(input_ids) + self.wpe(position_ids)
        query_pos = torch.arange(total - seq, total, device=input_ids.device)
        key_pos = torch.arange(total, device=input_ids.device)
        allowed = (key_pos[None, :] <= query_pos[:, None])[None, None] & attention_mask[:, None, None, :].bool()
        attention_bias = (1.0 - allowed.to(x.dtype)) * torch.finfo(x.dtype).min
        keys, values = [], []
        for i, block in enumerate(self.h):
            x, key, value = block(x, past_k[i], past_v[i], attention_bias)
            keys.append(key)
            values.append(value)
        x = self.ln_f(x)
        logits = torch.matmul(x, self.wte.weight.transpose(0, 1))
        return logits, torch.stack(keys), torch.stack(values)


def empty_past(batch, past=0, generator=None):
    shape = (LAYERS, batch, HEADS, past, HEAD_DIM)
    if past == 0 or generator is None:
        return torch.zeros(shape)
    return torch.randn(shape, generator=generator)


def prompt_inputs():
    """LEFT-padded prompts (lengths 7, 5, 3, pad id 0) with empty pasts."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    width = max(PROMPT_LENGTHS)
    ids = torch.randint(1, VOCAB, (len(PROMPT_LENGTHS), width), generator=generator)
    mask = (torch.arange(width)[None, :] >= width - torch.tensor(PROMPT_LENGTHS)[:, None]).to(torch.int64)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD_ID))
    past = empty_past(len(PROMPT_LENGTHS))
    return {"input_ids": ids, "attention_mask": mask, "past_k": past, "past_v": past.clone()}


def generate(model, inputs, sites):
    """Greedy decoding with the cache: (ids [B, 7 + 12], mask, [per layer (q, k) of the positions
    each forward fed, concatenated over the steps], smallest top-1 / top-2 logit gap)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    past_k, past_v = inputs["past_k"], inputs["past_v"]
    step_ids = ids
    per_layer = [[] for _ in sites]
    gap = math.inf
    modules = dict(model.named_modules())
    for _ in range(NEW_TOKENS):
        with pre_hooks(model, sites) as calls:
            logits, past_k, past_v = model(step_ids, mask, past_k, past_v)
        for layer, (name, args) in enumerate(calls):
            per_layer[layer].append(modules[name].reference_qk(args[0]))
        top = logits[:, -1].topk(2, dim=-1).values
        gap = min(gap, (top[:, 0] - top[:, 1]).min().item())
        step_ids = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, step_ids], dim=1)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
    steps = [(torch.cat([q for q, _ in pairs], 2), torch.cat([k for _, k in pairs], 2)) for pairs in per_layer]
    return ids, mask, steps, gap


def gpt2_cache_reference(model, inputs, sites):
    def run():
        with torch.no_grad():
            output = model(*inputs.values())[0]
            ids, mask, steps, gap = generate(model, inputs, sites)
            if gap < 1e-3:
                raise RuntimeError(f"gpt2_cache: greedy top-2 logit gap {gap:.3g}: argmax is fragile")
            # One forward over the whole generated sequences (P = 0).
            whole = (ids, mask, empty_past(ids.shape[0]), empty_past(ids.shape[0]))
            with pre_hooks(model, sites) as calls:
                _, logits, _ = softmax_logits(lambda: model(*whole))
            modules = dict(model.named_modules())
            pairs = [modules[name].reference_qk(args[0]) for name, args in calls]
        seq = ids.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool).tril()[None, None]
        allowed = causal & mask.bool()[:, None, None, :]
        real = mask.bool()[:, None, : seq - 1, None]  # the steps fed every position but the last
        for layer, (q, k) in enumerate(pairs):
            check_prescale("gpt2_cache", layer, logits[layer], q, k, 1 / math.sqrt(HEAD_DIM), allowed)
            for part, stepped, whole_part in (("q", steps[layer][0], q), ("k", steps[layer][1], k)):
                diff = (stepped - whole_part[:, :, : seq - 1]).abs().masked_select(real).max().item()
                if diff > 1e-5:
                    raise RuntimeError(f"gpt2_cache layer {layer}: step-by-step {part} differs from the "
                                       f"one-forward {part} by {diff:.3g}")
        run.generated = (ids, mask)
        return output, pairs

    return run


def check_traced(traced, model):
    """The traced file must equal eager for the prompt and for cached steps of other sizes,
    and generate the same tokens."""
    generator = torch.Generator().manual_seed(INPUT_SEED + 1)
    batch = len(PROMPT_LENGTHS)
    for past, new in ((0, 7), (7, 1), (9, 1), (4, 3), (0, 19)):
        ids = torch.randint(1, VOCAB, (batch, new), generator=generator)
        mask = torch.ones(batch, past + new, dtype=torch.int64)
        mask[1, :2] = 0
        args = (ids, mask, empty_past(batch, past, generator), empty_past(batch, past, generator))
        with torch.no_grad():
            got, want = traced(*args), model(*args)
        diff = max((g - w).abs().max().item() for g, w in zip(got, want))
        if got[1].shape[3] != past + new or diff > 1e-5:
            raise RuntimeError(f"gpt2_cache: traced differs from eager at P={past}, T={new} by {diff:.3g}")
    with torch.no_grad():
        ids_traced = generate(traced, prompt_inputs(), [])[0]
        ids_eager = generate(model, prompt_inputs(), [])[0]
    if not torch.equal(ids_traced, ids_eager):
        raise RuntimeError("gpt2_cache: the traced model generates other tokens than eager")


def gpt2_cache_export():
    model = init_weights(CachedGPT2())
    inputs = prompt_inputs()
    sites = [f"h.{i}.attn" for i in range(LAYERS)]
    generator = torch.Generator().manual_seed(INPUT_SEED + 2)
    batch = len(PROMPT_LENGTHS)
    example = (torch.randint(1, VOCAB, (batch, TRACE_NEW), generator=generator),
               torch.ones(batch, TRACE_PAST + TRACE_NEW, dtype=torch.int64),
               empty_past(batch, TRACE_PAST, generator), empty_past(batch, TRACE_PAST, generator))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    check_traced(traced, model)
    expect_form("gpt2_cache", inlined(traced), "matmul", 2, (batch, HEADS, TRACE_NEW, TRACE_PAST + TRACE_NEW))
    reference = gpt2_cache_reference(model, inputs, sites)
    with torch.no_grad():
        reference()
    ids, _ = reference.generated
    prescale = repr(1 / math.sqrt(HEAD_DIM))
    extra = {
        "inspect": "no",
        "generated_ids": json.dumps(ids.tolist(), separators=(",", ":")),
        "prompt_lengths": ",".join(map(str, PROMPT_LENGTHS)),
        "new_tokens": str(NEW_TOKENS),
        "padding": "left",
    }
    extra.update({f"layer{i}.form": "matmul" for i in range(LAYERS)})
    return Export(
        family="gpt2_cache",
        # Already traced (with P > 0, T > 1): make_models' torch.jit.trace returns it as is.
        model=traced,
        inputs=inputs,
        n_layers=LAYERS,
        n_heads=HEADS,
        head_dim=HEAD_DIM,
        layer_prescales=[prescale] * LAYERS,
        layer_modules=sites,
        reference=reference,
        extra_metadata=extra,
    )


EXPORTS = {"gpt2_cache": gpt2_cache_export}
