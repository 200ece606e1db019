"""Models whose attention calls torch.nn.functional.scaled_dot_product_attention, written as
HuggingFace's SDPA attention code is (torch 2.x only: on torch 1.x EXPORTS is empty).

  sdpa_bert   BERT-like encoder: additive float mask from attention_mask ((1 - m) * min), the
              default scale (1/sqrt(D)).
  sdpa_gpt2   GPT-2-like decoder: no mask, is_causal=True (right padding only), the default
              scale.
  sdpa_llama  LLaMA-like decoder: rotary q/k, 4 query heads over 2 key/value heads, a boolean
              causal+padding mask and an explicit scale=; layer 0 repeats the keys (repeat_kv:
              expand + reshape) before the call, layer 1 passes the 2 key heads with
              enable_gqa=True and scale=0.3.

Reference (Export.reference): per layer the q and k given to SDPA, [B, H, S, D], unscaled, keys
expanded to the query heads; layer{L}.prescale is the scale SDPA uses; layer{L}.form = "sdpa".
"""
import math

import torch
from torch import nn
import torch.nn.functional as F

from export_common import Export, init_weights, text_inputs

VOCAB, EMBED, HEADS, KV_HEADS, LAYERS = 96, 32, 4, 2, 2
HEAD_DIM = EMBED // HEADS
NO_INSPECT = {"inspect": "no"}


class SdpaSelfAttention(nn.Module):
    def __init__(self, kv_heads=HEADS, rotary=False, scale=None, gqa_mode="repeat"):
        super().__init__()
        self.q_proj = nn.Linear(EMBED, HEADS * HEAD_DIM)
        self.k_proj = nn.Linear(EMBED, kv_heads * HEAD_DIM)
        self.v_proj = nn.Linear(EMBED, kv_heads * HEAD_DIM)
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, EMBED)
        self.kv_heads, self.rotary, self.scale, self.gqa_mode = kv_heads, rotary, scale, gqa_mode
        self.record = None  # a list while the reference runs

    def forward(self, x, mask, is_causal, cos=None, sin=None):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, HEAD_DIM).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, HEAD_DIM).transpose(1, 2)
        if self.rotary:
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        extra = {}
        if self.kv_heads != HEADS:
            if self.gqa_mode == "repeat":
                k, v = repeat_kv(k, HEADS // self.kv_heads), repeat_kv(v, HEADS // self.kv_heads)
            else:
                extra["enable_gqa"] = True
        if self.record is not None:
            self.record.append((q.clone(), repeat_kv(k, HEADS // k.shape[1]).clone()))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0,
                                             is_causal=is_causal, scale=self.scale, **extra)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, HEADS * HEAD_DIM))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    b, h, s, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


class SdpaModel(nn.Module):
    """Embeddings, LAYERS pre-norm blocks (attention + MLP), a final norm."""

    def __init__(self, style):
        super().__init__()
        self.style = style
        self.embed = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.position = nn.Embedding(16, EMBED)
        if style == "llama":
            attns = [SdpaSelfAttention(KV_HEADS, rotary=True, scale=1 / math.sqrt(HEAD_DIM)),
                     SdpaSelfAttention(KV_HEADS, rotary=True, scale=0.3, gqa_mode="enable_gqa")]
        else:
            attns = [SdpaSelfAttention() for _ in range(LAYERS)]
        self.layers = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(EMBED), "attn": attn,
                           "mlp": nn.Sequential(nn.Linear(EMBED, 2 * EMBED), nn.GELU(),
                                                nn.Linear(2 * EMBED, EMBED))})
            for attn in attns)
        self.norm = nn.LayerNorm(EMBED)

    def forward(self, input_ids, attention_mask):
        s = input_ids.shape[1]
        x = self.embed(input_ids)
        cos = sin = None
        if self.style == "llama":
            inv_freq = 1.0 / (10000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))
            freqs = torch.arange(s).float()[:, None] * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        else:
            x = x + self.position(torch.arange(s))
        is_causal = False
        if self.style == "bert":
            # HF's _prepare_4d_attention_mask_for_sdpa: additive, 0 where attended, min elsewhere.
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        elif self.style == "gpt2":
            mask, is_causal = None, True
        else:
            causal = torch.ones(s, s, dtype=torch.bool).tril()
            mask = causal[None, None] & attention_mask[:, None, None, :].bool()
        for layer in self.layers:
            x = x + layer["attn"](layer["norm"](x), mask, is_causal, cos, sin)
            x = x + layer["mlp"](x)
        return (self.norm(x),)


def sdpa_export(style, scales):
    model = init_weights(SdpaModel(style))
    inputs = text_inputs(VOCAB)

    def run():
        attns = [layer["attn"] for layer in model.layers]
        records = []
        for attn in attns:
            attn.record = records
        try:
            output = model(*inputs.values())[0]
        finally:
            for attn in attns:
                attn.record = None
        return output, records

    return Export(
        family=f"sdpa_{style}",
        model=model,
        inputs=inputs,
        n_layers=LAYERS,
        n_heads=HEADS,
        head_dim=HEAD_DIM,
        layer_prescales=[repr(scale) for scale in scales],
        layer_modules=[f"layers.{i}.attn" for i in range(LAYERS)],
        reference=run,
        extra_metadata=dict(NO_INSPECT, **{f"layer{i}.form": "sdpa" for i in range(LAYERS)},
                            **({"n_kv_heads": str(KV_HEADS)} if style == "llama" else {})),
    )


DEFAULT_SCALE = 1 / math.sqrt(HEAD_DIM)
EXPORTS = {}
if hasattr(F, "scaled_dot_product_attention"):
    EXPORTS = {
        "sdpa_bert": lambda: sdpa_export("bert", [DEFAULT_SCALE] * LAYERS),
        "sdpa_gpt2": lambda: sdpa_export("gpt2", [DEFAULT_SCALE] * LAYERS),
        "sdpa_llama": lambda: sdpa_export("llama", [1 / math.sqrt(HEAD_DIM), 0.3]),
    }
