"""What make_models.py and the model modules beside it share: the Export record, weights and
inputs. A module that adds models defines `EXPORTS = {stem: builder}` (each builder returns an
Export) and is listed in make_models.MODEL_MODULES."""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from hf_gpt2 import Conv1D

# The fixed text batch: 3 sequences RIGHT padded to 12 tokens with pad id 0.
TEXT_LENGTHS, PAD_ID = (12, 9, 5), 0
IMAGE_BATCH = 2
INPUT_SEED = 1234
ATOL = 1e-5


@dataclass
class Export:
    """One model to write. `site_module` is formatted with the layer index."""

    family: str
    model: nn.Module
    inputs: Dict[str, torch.Tensor]
    n_layers: int
    site_module: str = ""
    n_heads: int = 0
    head_dim: int = 0
    prescale: str = "1"
    scripted: bool = False
    extra_metadata: Dict[str, str] = field(default_factory=dict)
    # Per-layer prescale (repr strings) where layers differ; overrides `prescale` when set.
    layer_prescales: Optional[List[str]] = None
    # Per-layer module paths where `site_module` cannot describe them; overrides it when set.
    layer_modules: Optional[List[str]] = None
    # An independent reference: called under no_grad, returns (first output, [(q, k) per site])
    # with q, k [B, H, S, D]. None: the qk_record recorder inside the model code is used.
    reference: Optional[Callable[[], Tuple[torch.Tensor, List[Tuple[torch.Tensor, torch.Tensor]]]]] = None
    # Tracing: with grad enabled (torch.nn's slow paths), and whether torch.jit.trace re-checks.
    trace_with_grad: bool = False
    check_trace: bool = True


# --- weights and inputs ---------------------------------------------------------------------


def init_weights(model):
    """Random weights scaled so activations stay O(1) and attention logits have a spread of a
    few units: HF's std=0.02 init would make every attention row nearly uniform."""
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if name == "bias":
                    param.normal_(0.0, 0.1)
                elif isinstance(module, nn.Embedding):
                    param.normal_(0.0, 1.0)
                    if module.padding_idx is not None:
                        param[module.padding_idx].zero_()
                elif param.dim() == 1:  # LayerNorm / RMSNorm gains
                    param.copy_(1.0 + 0.1 * torch.randn_like(param))
                elif isinstance(module, nn.Linear):
                    param.normal_(0.0, module.in_features**-0.5)
                elif isinstance(module, Conv1D):  # weight stored [in, out]
                    param.normal_(0.0, param.shape[0] ** -0.5)
                elif isinstance(module, nn.Conv2d):
                    param.normal_(0.0, param[0].numel() ** -0.5)
                else:  # ViT cls_token / position_embeddings
                    param.normal_(0.0, 0.5)
    return model.eval()


def text_inputs(vocab_size, lengths=TEXT_LENGTHS):
    """input_ids / attention_mask [len(lengths), max(lengths)]: random non-pad ids, right padding."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    input_ids = torch.randint(1, vocab_size, (len(lengths), max(lengths)), generator=generator)
    attention_mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).to(torch.int64)
    input_ids = torch.where(attention_mask.bool(), input_ids, torch.full_like(input_ids, PAD_ID))
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def image_inputs(config):
    generator = torch.Generator().manual_seed(INPUT_SEED)
    shape = (IMAGE_BATCH, config.num_channels, config.image_size, config.image_size)
    return {"pixel_values": torch.randn(shape, generator=generator)}


