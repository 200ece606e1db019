"""Pieces HuggingFace transformers (4.3x) shares between model families, copied op for op.

The models in this folder follow only the code path HF takes for a TorchScript export of the
base model: eval mode, no cache input, no head mask, no output_attentions, tuple outputs
(config.torchscript=True implies return_dict=False).
"""

import math

import torch
from torch import nn


def get_extended_attention_mask(attention_mask, dtype):
    """ModuleUtilsMixin.get_extended_attention_mask for an encoder and a 2-D [batch, seq] mask.

    Returns the additive mask [batch, 1, 1, seq]: 0 for real tokens, finfo(dtype).min for padding.
    """
    extended_attention_mask = attention_mask[:, None, None, :]
    extended_attention_mask = extended_attention_mask.to(dtype=dtype)  # fp16 compatibility
    extended_attention_mask = (1.0 - extended_attention_mask) * torch.finfo(dtype).min
    return extended_attention_mask


class GELUActivation(nn.Module):
    """ACT2FN["gelu"]: the exact (erf) GELU."""

    def forward(self, input):
        return nn.functional.gelu(input)


class NewGELUActivation(nn.Module):
    """ACT2FN["gelu_new"]: the tanh approximation used by GPT-2."""

    def forward(self, input):
        return 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (input + 0.044715 * torch.pow(input, 3.0))))
