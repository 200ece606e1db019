"""Models for the plugin's edge cases: a BERT that torch.jit.script accepts, and a model with
no attention at all."""

import math
from typing import Tuple

import torch
from torch import nn

from hf_bert import BertModel, BertSelfAttention
from hf_common import GELUActivation
from qk_record import record_qk

class ScriptableBertSelfAttention(BertSelfAttention):
    """BertSelfAttention with the same op sequence, written in the subset TorchScript compiles
    (no tuple concatenation of sizes, no unguarded Python-only calls)."""

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.size(0), x.size(1), self.num_attention_heads, self.attention_head_size)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> Tuple[torch.Tensor]:
        mixed_query_layer = self.query(hidden_states)
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        query_layer = self.transpose_for_scores(mixed_query_layer)

        if not torch.jit.is_scripting():
            record_qk(query_layer, key_layer)
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_scores = attention_scores + attention_mask
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_probs)

        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        context_layer = context_layer.view(context_layer.size(0), context_layer.size(1), self.all_head_size)
        return (context_layer,)


class ScriptableBertModel(BertModel):
    """BertModel with scriptable self-attention and mask code; same parameter paths."""

    # torch.finfo is not scriptable: the mask value is a module constant instead.
    __constants__ = ["mask_value"]

    def __init__(self, config):
        super().__init__(config)
        self.mask_value = float(torch.finfo(torch.float32).min)
        for layer in self.encoder.layer:
            layer.attention.self = ScriptableBertSelfAttention(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_size, seq_length = input_ids.size(0), input_ids.size(1)
        token_type_ids = self.embeddings.token_type_ids[:, :seq_length].expand(batch_size, seq_length)
        extended_attention_mask = attention_mask[:, None, None, :].to(dtype=torch.float32)
        extended_attention_mask = (1.0 - extended_attention_mask) * self.mask_value

        embedding_output = self.embeddings(input_ids, token_type_ids)
        encoder_outputs = self.encoder(embedding_output, extended_attention_mask)
        sequence_output = encoder_outputs[0]
        pooled_output = self.pooler(sequence_output)
        return (sequence_output, pooled_output)


class TokenMLP(nn.Module):
    """Per-token embedding -> MLP with the same forward arguments as the text models, and no
    attention (no matmul between two activations): a capture must find zero sites in it."""

    def __init__(self, vocab_size=100, hidden_size=32):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.fc1 = nn.Linear(hidden_size, 4 * hidden_size)
        self.act = GELUActivation()
        self.fc2 = nn.Linear(4 * hidden_size, hidden_size)

    def forward(self, input_ids, attention_mask):
        hidden_states = self.fc2(self.act(self.fc1(self.embed(input_ids))))
        # Zero the padded positions so the mask input is used (and kept) by the trace.
        return (hidden_states * attention_mask.unsqueeze(-1).to(hidden_states.dtype),)
