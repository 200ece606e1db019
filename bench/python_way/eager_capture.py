"""q/k the Python way: the eager HF-style BERT of models/ with forward hooks on query and key.

What a user without qkscope writes: build the model (models/hf_bert.py mirrors HuggingFace's
modeling_bert), load the weights, register forward hooks on every layer's
`attention.self.query` and `attention.self.key` Linear modules, run the corpus in batches, and
keep the real (unpadded) tokens' vectors split into heads. The weights are the TorchScript
model's own (the file capture runs), loaded into the eager module by name, so both ways run the
same numbers.
"""

import math
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "models")
sys.dont_write_bytecode = True  # keep models/ free of __pycache__
sys.path.insert(0, MODELS)
sys.path.insert(0, os.path.join(MODELS, "example"))
from bert_tokenizer import BertTokenizer  # noqa: E402
from hf_bert import BertConfig, BertModel  # noqa: E402

CLS, SEP, PAD = 2, 3, 0


def read_text(path, vocab, max_length=128):
    """Sequences as capture --text --vocab makes them: one per non-blank line, long lines split
    into windows of max_length - 2 pieces, each framed by [CLS] and [SEP]."""
    tokenizer = BertTokenizer(vocab)
    sequences = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            ids = tokenizer.encode(line)
            width = max_length - 2
            for start in range(0, max(1, len(ids)), width):
                sequences.append([CLS] + ids[start:start + width] + [SEP])
    return sequences


def read_ids(path):
    """capture --ids's format: one sequence of space-separated ids per non-blank line."""
    with open(path, encoding="utf-8") as f:
        return [[int(t) for t in line.split()] for line in f if line.strip()]


def write_ids(path, sequences):
    with open(path, "w", encoding="utf-8") as f:
        for s in sequences:
            f.write(" ".join(map(str, s)) + "\n")


def load_eager_bert(pt_path, num_heads):
    """models/hf_bert.BertModel with the TorchScript file's weights. The config comes from the
    weights' shapes; the head count is not in them, so it is an argument (4 for the example)."""
    state = torch.jit.load(pt_path, map_location="cpu").state_dict()
    n_layers = 1 + max(int(name.split(".")[2]) for name in state if name.startswith("encoder.layer."))
    words = state["embeddings.word_embeddings.weight"]
    config = BertConfig(
        vocab_size=words.shape[0], hidden_size=words.shape[1], num_hidden_layers=n_layers,
        num_attention_heads=num_heads,
        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0])
    model = BertModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The traced file also holds the non-persistent token_type_ids buffer; nothing else may differ.
    if missing or set(unexpected) - {"embeddings.token_type_ids"}:
        raise RuntimeError(f"{pt_path}: weights do not fit hf_bert.BertModel: missing {missing}, "
                           f"unexpected {unexpected}")
    return model.eval(), config


def capture_qk(model, config, sequences, batch_size=8):
    """Runs every batch (corpus order, padded to its longest row, as capture batches) with hooks
    on query and key; returns per layer float32 q, k [N, H, D] and each token's sequence index."""
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    outputs = {}  # (layer, "q"|"k") -> this batch's [B, S, H*D] output
    hooks = []
    for li, layer in enumerate(model.encoder.layer):
        for name, module in (("q", layer.attention.self.query), ("k", layer.attention.self.key)):
            def hook(module, inputs, output, key=(li, name)):
                outputs[key] = output.detach()
            hooks.append(module.register_forward_hook(hook))
    kept = {key: [] for key in ((li, n) for li in range(config.num_hidden_layers) for n in "qk")}
    sequence_index = []
    try:
        with torch.no_grad():
            for b in range(0, len(sequences), batch_size):
                batch = sequences[b:b + batch_size]
                width = max(len(s) for s in batch)
                ids = torch.full((len(batch), width), PAD, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, s in enumerate(batch):
                    ids[r, :len(s)] = torch.tensor(s)
                    mask[r, :len(s)] = 1
                model(ids, mask)
                real = mask.bool()
                for key, out in outputs.items():
                    kept[key].append(out[real].reshape(-1, heads, head_dim).numpy().copy())
                for r, s in enumerate(batch):
                    sequence_index.extend([b + r] * len(s))
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for li in range(config.num_hidden_layers):
        layers.append({"q": np.concatenate(kept[(li, "q")]), "k": np.concatenate(kept[(li, "k")]),
                       "module": f"encoder.layer.{li}.attention.self",
                       "prescale": 1 / math.sqrt(head_dim)})  # BERT divides the scores by sqrt(d)
    return layers, np.asarray(sequence_index, dtype=np.int64)
