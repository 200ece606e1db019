#!/usr/bin/python3
"""Print the attention score ops of the models of forms_models.py / decoder_models.py as the
saved files hold them (torch.jit.load, then torch._C._jit_pass_inline, as the plugin sees them).

    forms_graphs.py DIR [NAME ...]

Default NAMEs: every model in DIR whose ref metadata has `layer0.form`. Per model: the ref
metadata (form, prescale, modules), then per score op (a product whose output reaches a softmax
through elementwise / view ops, or a fused encoder-layer op) the IR lines of its operands'
producers back to the projections, the op itself, and the ops from it to the softmax. Products
that do not reach a softmax (probabilities x values, a tied LM head) are listed after.
"""

import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402

from forms_common import FORM_OPS, all_nodes  # noqa: E402
from safetensors_io import load_file  # noqa: E402

PRODUCTS = ("aten::matmul", "aten::bmm", "aten::baddbmm", "aten::einsum")
FUSED = ("aten::_transformer_encoder_layer_fwd",)
TO_SOFTMAX = ("aten::div", "aten::mul", "aten::add", "aten::add_", "aten::sub", "aten::masked_fill",
              "aten::view", "aten::reshape", "aten::to", "aten::type_as", "aten::where", "aten::contiguous")
STOP = ("aten::linear", "aten::addmm", "prim::GetAttr", "prim::Param", "prim::If", "prim::Loop",
        "aten::embedding", "aten::layer_norm", "prim::TupleUnpack", "prim::CallFunction")
SKIP = ("prim::ListConstruct", "aten::size", "prim::NumToTensor", "aten::Int")


def first_line(node):
    text = str(node).split("\n")[0]
    return text.split(" # ")[0].rstrip()


def to_softmax(node, depth=8):
    """Ops from `node`'s output to a softmax through TO_SOFTMAX ops, or None."""
    chain, value = [], node.output()
    for _ in range(depth):
        uses = [u for u in value.uses() if u.user.kind() not in ("aten::size", "aten::expand_as")]
        # Scripted graphs: a value returned from a prim::If branch continues as the If's output.
        block_out = next((u for u in uses if u.user.kind() == "prim::Return"), None)
        if block_out is not None and block_out.user.owningBlock().owningNode() is not None:
            owner = block_out.user.owningBlock().owningNode()
            chain.append(owner)
            value = owner.outputsAt(block_out.offset)
            continue
        nxt = next((u.user for u in uses if u.user.kind() in TO_SOFTMAX + ("aten::softmax", "aten::_softmax")), None)
        if nxt is None:
            return None
        chain.append(nxt)
        if "softmax" in nxt.kind():
            return chain
        value = nxt.output()
    return None


def constants_note(node):
    """`  # %c = value` for the tensor / float constants among node's inputs."""
    notes = []
    for value in node.inputs():
        if value.node().kind() == "prim::Constant" and value.type().kind() in ("TensorType", "FloatType", "StringType"):
            constant = value.toIValue()
            text = f"tensor({constant.item():.9g})" if isinstance(constant, torch.Tensor) else repr(constant)
            notes.append(f"%{value.debugName()} = {text}")
    return "  # " + ", ".join(notes) if notes else ""


def producers(node, depth=10):
    """Nodes feeding `node`'s tensor inputs, back to projections / parameters (included)."""
    seen = set()
    stack = [(value.node(), 0) for value in node.inputs()]
    while stack:
        producer, level = stack.pop()
        tensor_list = producer.kind() == "prim::ListConstruct" and producer.output().type().kind() == "ListType" and producer.output().type().getElementType().kind() == "TensorType"
        if producer in seen or (producer.kind() in SKIP and not tensor_list):
            continue
        if producer.kind() == "prim::Constant" and producer.output().type().kind() not in ("TensorType", "FloatType", "StringType"):
            continue  # ints, bools, None, devices: shown by name
        seen.add(producer)
        if producer.kind() in STOP or producer.kind() == "prim::Constant" or level >= depth:
            continue
        stack.extend((value.node(), level + 1) for value in producer.inputs())
    return seen


def show(out_dir, name, out):
    module = torch.jit.load(os.path.join(out_dir, f"{name}.pt"))
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    _, metadata = load_file(os.path.join(out_dir, f"{name}_ref.safetensors"))
    layers = int(metadata["layers"])
    keys = ("n_heads", "head_dim", "skipped_modules")
    print(f"==== {name}: layers {layers}, " + ", ".join(f"{k} {metadata[k]}" for k in keys if k in metadata), file=out)
    for layer in range(layers):
        print(f"  layer{layer}: module {metadata[f'layer{layer}.module']}, form {metadata[f'layer{layer}.form']}, "
              f"prescale {metadata[f'layer{layer}.prescale']}", file=out)
    order = {node: i for i, node in enumerate(all_nodes(graph))}
    scores, others = [], []
    for node in all_nodes(graph):
        if node.kind() in FUSED:
            scores.append((node, []))
        elif node.kind() in PRODUCTS:
            chain = to_softmax(node)
            (scores if chain else others).append((node, chain or []))
    print(f"  {len(scores)} score op(s): " + ", ".join(n.kind() for n, _ in scores), file=out)
    for index, (node, chain) in enumerate(scores):
        print(f"  -- score op {index}: producers, the op (<==), then to the softmax", file=out)
        for producer in sorted(producers(node), key=lambda n: order.get(n, -1)):
            print("     " + first_line(producer) + constants_note(producer), file=out)
        print("  <==" + first_line(node)[3:] if first_line(node).startswith("   ") else "  <== " + first_line(node),
              file=out)
        for follower in chain:
            print("     " + first_line(follower) + constants_note(follower), file=out)
    if others:
        print("  products that reach no softmax (not sites):", file=out)
        for node, _ in others:
            print("     " + first_line(node), file=out)
    print(file=out)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    names = args.names
    if not names:
        for f in sorted(os.listdir(args.dir)):
            if f.endswith("_ref.safetensors"):
                _, metadata = load_file(os.path.join(args.dir, f))
                if "layer0.form" in metadata:
                    names.append(f[: -len("_ref.safetensors")])
    print(f"# forms_graphs.py {args.dir}: score ops of the saved graphs after torch._C._jit_pass_inline "
          "(IR lines, source comments dropped; constants that matter noted after '#').\n")
    for name in names:
        show(args.dir, name, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
