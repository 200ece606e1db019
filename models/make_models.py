#!/usr/bin/python3
"""Build the small TorchScript test models of qkscope, with their inputs and reference q/k.

    make_models.py --out DIR [--only NAMES] [--bench-bert]
    make_models.py --check DIR

--out writes, for each attention model NAME (bert, gpt2, distilbert, llama, t5, vit,
bert_scripted): NAME.pt, NAME_inputs.safetensors (tensors named after forward's arguments) and
NAME_ref.safetensors (per site layer{L}.q / layer{L}.k [B, H, S, D] recorded on the eager
module, and `output`, the eager model's first output). Also mlp.pt (+ inputs and ref: no
attention), corrupt.pt (a truncated, garbled model) and not_torchscript.pt (text). --only
takes a comma-separated subset of those names. --bench-bert writes bert_base.pt and
bert_base_inputs.safetensors only. --check reloads every model that has a ref, runs it on its
inputs and compares with the ref output, and checks that the two broken files fail to load.
Everything is seeded: the same script writes the same tensors.
"""

import os
import sys

# torch.jit.script writes module constants in set order, which follows Python's per-process
# string hash seed: pin it (by re-running this script) so scripted files are byte-identical.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

sys.dont_write_bytecode = True  # run from the build: keep the source folder free of __pycache__

import argparse  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import importlib  # noqa: E402
from typing import Callable, Dict  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

# Debian's torch 2.x fuses CPU kernels with the TensorExpr fuser (LLVM code generation); the
# profiling executor compiles them on a method's second call and some (a cat followed by an add,
# as in ViT's embeddings) never finish compiling. The models need no fusion: off, as qkscope's
# CaptureModule::load does (--check runs every model more than once).
torch._C._jit_set_texpr_fuser_enabled(False)

from hf_bert import BertConfig, BertModel  # noqa: E402
from hf_distilbert import DistilBertConfig, DistilBertModel  # noqa: E402
from export_common import ATOL, Export, image_inputs, init_weights, text_inputs  # noqa: E402
from hf_gpt2 import GPT2Config, GPT2Model  # noqa: E402
from hf_llama import LlamaConfig, LlamaModel  # noqa: E402
from hf_t5 import T5Config, T5EncoderModel  # noqa: E402
from hf_vit import ViTConfig, ViTModel  # noqa: E402
from qk_record import recording  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402
from special_models import ScriptableBertModel, TokenMLP  # noqa: E402

# --- the models -----------------------------------------------------------------------------


def bert_export(model_class=BertModel, config=None):
    config = config or BertConfig()
    return Export(
        family="bert",
        model=init_weights(model_class(config)),
        inputs=text_inputs(config.vocab_size),
        n_layers=config.num_hidden_layers,
        site_module="encoder.layer.{}.attention.self",
        n_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        # scores / math.sqrt(head_dim) after the product (SPEC 1: prescale covers the scores too).
        prescale=repr(1 / math.sqrt(config.hidden_size // config.num_attention_heads)),
    )


def bert_scripted_export():
    export = bert_export(ScriptableBertModel, BertConfig(num_hidden_layers=2))
    export.scripted = True
    return export


def gpt2_export():
    config = GPT2Config()
    return Export(
        family="gpt2",
        model=init_weights(GPT2Model(config)),
        inputs=text_inputs(config.vocab_size),
        n_layers=config.n_layer,
        site_module="h.{}.attn",
        n_heads=config.n_head,
        head_dim=config.n_embd // config.n_head,
        # scores / torch.full([], v.size(-1) ** 0.5): a float32 divisor computed from a size.
        prescale=repr(1 / torch.tensor((config.n_embd // config.n_head) ** 0.5, dtype=torch.float32).item()),
    )


def distilbert_export():
    config = DistilBertConfig()
    head_dim = config.dim // config.n_heads
    return Export(
        family="distilbert",
        model=init_weights(DistilBertModel(config)),
        inputs=text_inputs(config.vocab_size),
        n_layers=config.n_layers,
        site_module="transformer.layer.{}.attention",
        n_heads=config.n_heads,
        head_dim=head_dim,
        # DistilBERT computes q / sqrt(d) before the product: the capture steps over it.
        prescale=repr(1 / math.sqrt(head_dim)),
    )


def llama_export():
    config = LlamaConfig()
    return Export(
        family="llama",
        model=init_weights(LlamaModel(config)),
        inputs=text_inputs(config.vocab_size),
        n_layers=config.num_hidden_layers,
        site_module="layers.{}.self_attn",
        n_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        prescale=repr(1 / math.sqrt(config.hidden_size // config.num_attention_heads)),
        extra_metadata={"n_kv_heads": str(config.num_key_value_heads)},
    )


def t5_export():
    config = T5Config()
    model = init_weights(T5EncoderModel(config))
    # T5 has no 1/sqrt(d) on the scores; HF's init puts it into q instead (std (d_model*d_kv)^-0.5).
    with torch.no_grad():
        for block in model.encoder.block:
            block.layer[0].SelfAttention.q.weight.mul_(config.d_kv**-0.5)
    return Export(
        family="t5",
        model=model,
        inputs=text_inputs(config.vocab_size),
        n_layers=config.num_layers,
        site_module="encoder.block.{}.layer.0.SelfAttention",
        n_heads=config.num_heads,
        head_dim=config.d_kv,
    )


def vit_export():
    config = ViTConfig()
    return Export(
        family="vit",
        model=init_weights(ViTModel(config)),
        inputs=image_inputs(config),
        n_layers=config.num_hidden_layers,
        site_module="encoder.layer.{}.attention.attention",
        n_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        prescale=repr(1 / math.sqrt(config.hidden_size // config.num_attention_heads)),
    )


def mlp_export():
    model = TokenMLP()
    inputs = text_inputs(model.embed.num_embeddings)
    return Export(family="mlp", model=init_weights(model), inputs=inputs, n_layers=0)


# File stem -> builder. Each builder runs right after torch.manual_seed(seed_of(stem)).
EXPORTS: Dict[str, Callable[[], Export]] = {
    "bert": bert_export,
    "gpt2": gpt2_export,
    "distilbert": distilbert_export,
    "llama": llama_export,
    "t5": t5_export,
    "vit": vit_export,
    "bert_scripted": bert_scripted_export,
    "mlp": mlp_export,
}
# Modules that add models (each defines EXPORTS like the one above), in this order.
MODEL_MODULES = ("forms_models", "decoder_models", "sdpa_models")
for _name in MODEL_MODULES:
    EXPORTS.update(importlib.import_module(_name).EXPORTS)
BROKEN = ("corrupt", "not_torchscript")
ALL_NAMES = tuple(EXPORTS) + BROKEN


def seed_of(name):
    """A fixed per-model seed, independent of which other models this run builds."""
    return 1000 + ALL_NAMES.index(name)


def build(name):
    torch.manual_seed(seed_of(name))
    return EXPORTS[name]()


# --- writing --------------------------------------------------------------------------------


def to_torchscript(model, inputs, scripted=False, with_grad=False, check_trace=True):
    """Script, or trace the way HF documents for TorchScript (eval mode, positional example
    inputs in forward's order). `with_grad`: trace with autograd on, as torch.nn's slow
    attention paths need (torch.nn.MultiheadAttention takes its fused fast path otherwise)."""
    if scripted:
        return torch.jit.script(model)
    with warnings.catch_warnings(), torch.set_grad_enabled(with_grad):
        # Tracing warns about Python-level size arithmetic (HF models do the same).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, tuple(inputs.values()), check_trace=check_trace)


def reference(export):
    """Run the eager module once with the q/k recorder on (or the export's own reference):
    (tensors, metadata) of the ref file."""
    if export.reference is not None:
        with torch.no_grad():
            output, pairs = export.reference()
    else:
        with torch.no_grad(), recording() as pairs:
            output = export.model(*export.inputs.values())[0]
    if len(pairs) != export.n_layers:
        raise RuntimeError(f"{export.family}: recorded {len(pairs)} attention sites, expected {export.n_layers}")
    tensors = {"output": output}
    metadata = {"family": export.family, "layers": str(export.n_layers)}
    if export.n_layers:
        metadata.update(n_heads=str(export.n_heads), head_dim=str(export.head_dim))
    for layer, (q, k) in enumerate(pairs):
        expected = (q.shape[0], export.n_heads, q.shape[2], export.head_dim)
        if tuple(q.shape) != expected or tuple(k.shape) != expected:
            shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}"
            raise RuntimeError(f"{export.family} layer {layer}: {shapes}, expected {expected}")
        tensors[f"layer{layer}.q"] = q
        tensors[f"layer{layer}.k"] = k
        modules, prescales = export.layer_modules, export.layer_prescales
        metadata[f"layer{layer}.module"] = modules[layer] if modules else export.site_module.format(layer)
        metadata[f"layer{layer}.prescale"] = prescales[layer] if prescales else export.prescale
    metadata.update(export.extra_metadata)
    return tensors, metadata


def write_export(name, out_dir):
    export = build(name)
    tensors, metadata = reference(export)
    module = to_torchscript(export.model, export.inputs, export.scripted, export.trace_with_grad,
                            export.check_trace)
    torch.jit.save(module, os.path.join(out_dir, f"{name}.pt"))
    save_file(export.inputs, os.path.join(out_dir, f"{name}_inputs.safetensors"))
    save_file(tensors, os.path.join(out_dir, f"{name}_ref.safetensors"), metadata)


def corrupt_bytes(valid):
    """Cut a valid model file in the middle (losing the zip directory at its end) and flip
    bytes throughout what is left, deterministically."""
    damaged = bytearray(valid[: len(valid) // 2])
    for i in range(64, len(damaged), 509):
        damaged[i] ^= 0xA5
    return bytes(damaged)


def write_broken(name, out_dir):
    path = os.path.join(out_dir, f"{name}.pt")
    if name == "corrupt":
        buffer = io.BytesIO()
        mlp = build("mlp")
        torch.jit.save(to_torchscript(mlp.model, mlp.inputs), buffer)
        with open(path, "wb") as f:
            f.write(corrupt_bytes(buffer.getvalue()))
    else:
        with open(path, "w") as f:
            f.write("This is a text file, not a TorchScript model: loading it must fail cleanly.\n")


def write_bench_bert(out_dir):
    """BERT-base sized (random weights), traced at batch 8 x 128 with a full mask."""
    torch.manual_seed(2000)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )
    model = init_weights(BertModel(config))
    inputs = text_inputs(config.vocab_size, lengths=(128,) * 8)
    with torch.no_grad():  # the same graph, without keeping autograd state for 110M parameters
        traced = to_torchscript(model, inputs)
    torch.jit.save(traced, os.path.join(out_dir, "bert_base.pt"))
    save_file(inputs, os.path.join(out_dir, "bert_base_inputs.safetensors"))


# --- checking -------------------------------------------------------------------------------


def check_one(out_dir, name):
    """Reload NAME.pt, run it on its inputs (by argument name) and compare with the ref."""
    module = torch.jit.load(os.path.join(out_dir, f"{name}.pt"))
    inputs, _ = load_file(os.path.join(out_dir, f"{name}_inputs.safetensors"))
    ref, metadata = load_file(os.path.join(out_dir, f"{name}_ref.safetensors"))
    n_layers = int(metadata["layers"])
    layer_keys = {f"layer{layer}.{part}" for layer in range(n_layers) for part in "qk"}
    if set(ref) != layer_keys | {"output"}:
        return f"ref tensors {sorted(ref)} do not match layers={n_layers}"
    diff = 0.0
    # Three runs: the profiling executor runs an optimized graph from the second call on.
    for _ in range(3):
        with torch.no_grad():
            output = module(**inputs)[0]
        if output.shape != ref["output"].shape:
            return f"output shape {tuple(output.shape)} != ref {tuple(ref['output'].shape)}"
        diff = max(diff, (output - ref["output"]).abs().max().item())
    return None if diff <= ATOL else f"max |output - ref| = {diff:.3g} > {ATOL}"


def check_fails_to_load(path):
    try:
        torch.jit.load(path)
    except Exception:  # noqa: BLE001 - any load error is the expected outcome
        return None
    return "loaded, but it must not"


def check(out_dir):
    names = sorted(f[: -len("_ref.safetensors")] for f in os.listdir(out_dir) if f.endswith("_ref.safetensors"))
    results = [(name, check_one(out_dir, name)) for name in names]
    results += [(name, check_fails_to_load(os.path.join(out_dir, f"{name}.pt"))) for name in BROKEN
                if os.path.exists(os.path.join(out_dir, f"{name}.pt"))]
    for name, error in results:
        print(f"check {name}: {'ok' if error is None else 'FAILED: ' + error}")
    return 0 if results and all(error is None for _, error in results) else 1


# --- command line ---------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="DIR", help="write the models into DIR")
    mode.add_argument("--check", metavar="DIR", help="verify the models in DIR against their refs")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {','.join(ALL_NAMES)}")
    parser.add_argument("--bench-bert", action="store_true", help="write bert_base.pt (+ inputs) only")
    args = parser.parse_args(argv)
    if args.only is not None:
        args.only = [name for name in args.only.split(",") if name]
        unknown = [name for name in args.only if name not in ALL_NAMES]
        if unknown or not args.only:
            parser.error(f"--only: unknown names {unknown}; expected some of {','.join(ALL_NAMES)}")
    if args.check and (args.only or args.bench_bert):
        parser.error("--check takes no --only / --bench-bert")
    return args


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(2)
    if args.check:
        return check(args.check)
    os.makedirs(args.out, exist_ok=True)
    start = time.monotonic()
    if args.bench_bert:
        write_bench_bert(args.out)
    else:
        for name in args.only or ALL_NAMES:
            if name in BROKEN:
                write_broken(name, args.out)
            else:
                write_export(name, args.out)
    print(f"make_models: wrote {args.out} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
