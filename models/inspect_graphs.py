#!/usr/bin/python3
"""Show how attention looks in the TorchScript graphs written by make_models.py, and check that
the q/k found there equal the eager references.

    inspect_graphs.py DIR [NAME ...] [--chains] [--ir]

For each NAME (default: every NAME.pt with a NAME_ref.safetensors in DIR) the forward graph is
inlined (torch._C._jit_pass_inline, as the plugin does with torch::jit::Inline) and every score
product is located with the rule of LIBTORCH-NOTES: `aten::matmul(A, aten::transpose(B, i, j))`
with i, j the last two dims of the 4-D B (see is_score_matmul). It prints, per site: the module path resolved from the
GetAttr chain of the q projection's weight, the op chains from the projections to the product
(q side, k side), the ops from the product to the softmax, and the largest difference between
the graph's q/k and the reference (q taken before a constant div/mul, as SPEC 1 asks). With
--ir it also prints the IR of layer 0's attention, projections to softmax. This is how
models/README.md was written; it is also a prototype of the plugin's matching rule.
"""

import sys

sys.dont_write_bytecode = True  # keep the source folder free of __pycache__

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402

from safetensors_io import load_file  # noqa: E402

ATOL = 1e-5
PROJECTIONS = ("aten::linear", "aten::addmm")
# Constant scalings of q before the product, which SPEC 1 steps over (DistilBERT: div).
SCALING_OPS = ("aten::div", "aten::mul")
SHAPE_READERS = ("aten::size", "aten::expand_as")


def inlined_graph(module):
    graph = module.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def constant_value(value):
    """The Python value of a prim::Constant (or a list of them), else None."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct" and all(i.node().kind() == "prim::Constant" for i in node.inputs()):
        return [i.toIValue() for i in node.inputs()]
    return None


def describe(node):
    """`kind(arg, ...)` with constants shown by value and other inputs by debug name."""
    args = []
    for value in node.inputs():
        constant = constant_value(value)
        if constant is not None or value.node().kind() == "prim::Constant":
            text = repr(constant)
            if isinstance(constant, torch.Tensor):
                text = f"tensor({constant.item():g})" if constant.dim() == 0 else f"tensor{tuple(constant.shape)}"
            args.append(text)
        else:
            args.append("%" + value.debugName())
    return f"{node.kind()}({', '.join(args)})"


def is_score_matmul(node):
    """matmul(A, transpose(B, i, j)) with {i, j} = {-1, -2} or {2, 3}: the last two dims of the
    4-D [batch, heads, seq, head_dim] key. Loaded graphs carry no shapes, so the rank itself
    is not checked; the dims rule out the head-split transpose(1, 2) of the values product."""
    if node.kind() != "aten::matmul":
        return False
    producer = node.inputsAt(1).node()
    if producer.kind() != "aten::transpose":
        return False
    dims = {constant_value(producer.inputsAt(1)), constant_value(producer.inputsAt(2))}
    return dims in ({-1, -2}, {2, 3})


def step_over_scaling(value):
    """q as SPEC 1 defines it: before a div/mul by a constant. Returns (q, factor)."""
    node = value.node()
    if node.kind() in SCALING_OPS:
        constant = constant_value(node.inputsAt(1))
        if constant is not None:
            scalar = float(constant.item() if isinstance(constant, torch.Tensor) else constant)
            return node.inputsAt(0), (1.0 / scalar if node.kind() == "aten::div" else scalar)
    return value, 1.0


def chain_to_projection(value):
    """Producers of `value` following each op's first input, back to a projection (inclusive)."""
    chain = []
    node = value.node()
    while node.kind() != "prim::Param":
        chain.append(node)
        if node.kind() in PROJECTIONS:
            break
        node = node.inputsAt(0).node()
    return chain[::-1]


def chain_to_softmax(value):
    """The ops from the score product to the softmax, following the score tensor's users."""
    chain = []
    while True:
        # Skip users that only read the shape (DistilBERT expands its mask "as" the scores).
        users = [use.user for use in value.uses() if use.user.kind() not in SHAPE_READERS]
        if not users:
            return chain
        node = users[0]
        chain.append(node)
        if node.kind() == "aten::softmax":
            return chain
        value = node.output()


def module_path(value):
    """Dotted path of a parameter read through prim::GetAttr chains from the graph's self."""
    names = []
    node = value.node()
    while node.kind() == "prim::GetAttr":
        names.append(node.s("name"))
        node = node.inputsAt(0).node()
    return ".".join(reversed(names))


def projection_weight(projection):
    """aten::linear(input, weight, bias) / aten::addmm(bias, input, weight) (GPT-2 Conv1D)."""
    return projection.inputsAt(1 if projection.kind() == "aten::linear" else 2)


def site_module(q_chain):
    """The attention module owning q's projection: the weight path minus `<proj>.weight`."""
    path = module_path(projection_weight(q_chain[0]))
    return path.rsplit(".", 2)[0]


def run_with_extra_outputs(module, graph, values, inputs):
    """Run the inlined graph with `values` appended to its outputs; returns their tensors."""
    graph = graph.copy()
    # Debug names are unique within a graph, so they map the values onto the copy.
    by_name = {v.debugName(): v for n in graph.nodes() for v in n.outputs()}
    values = [by_name[v.debugName()] for v in values]
    ret = graph.return_node()
    outputs = list(ret.inputs()) + values
    tuple_node = graph.create("prim::TupleConstruct", outputs)
    tuple_node.output().setType(torch._C.TupleType([o.type() for o in outputs]))
    tuple_node.insertBefore(ret)
    for _ in range(ret.inputsSize()):
        ret.removeInput(0)
    ret.addInput(tuple_node.output())
    function = torch._C._create_function_from_graph("forward_with_qk", graph)
    result = function(module._c, *inputs)
    return list(result)[-len(values):]


def ir_excerpt(graph, projections, end):
    """The IR lines of every node on a path from one of `projections` to `end`, in graph order,
    followed by the values of the constants they use."""
    downstream = set()
    for node in graph.nodes():
        if node in projections or any(i.node() in downstream for i in node.inputs()):
            downstream.add(node)
    upstream, stack = set(), [end]
    while stack:
        node = stack.pop()
        if node not in upstream:
            upstream.add(node)
            stack.extend(i.node() for i in node.inputs())
    lines, constants = [], {}
    for node in graph.nodes():
        constant_list = node.kind() == "prim::ListConstruct" and constant_value(node.output()) is not None
        if node in downstream and node in upstream and not constant_list:
            lines.append(str(node).split(" # ")[0].rstrip())
            for value in node.inputs():
                constant = constant_value(value)
                if constant is not None:
                    constants["%" + value.debugName()] = constant
    legend = ", ".join(f"{name} = {value!r}" for name, value in constants.items())
    return lines, legend


def scaled_scores(score):
    """The scores after the scalings applied right after the product (a single-use chain of
    div/mul): with q and k, they measure the site's whole prescale (SPEC 1)."""
    value = score.output()
    while len(value.uses()) == 1 and value.uses()[0].user.kind() in SCALING_OPS:
        value = value.uses()[0].user.output()
    return value


def find_sites(graph):
    """(score matmul, q as captured, k, scaled scores) for every score product, in graph order."""
    sites = []
    for score in filter(is_score_matmul, graph.nodes()):
        q, _ = step_over_scaling(score.inputsAt(0))
        sites.append((score, q, score.inputsAt(1).node().inputsAt(0), scaled_scores(score)))
    return sites


def inspect(out_dir, name, show_chains, show_ir):
    """Print what the graph of NAME.pt holds; returns the list of disagreements with its ref."""
    module = torch.jit.load(os.path.join(out_dir, f"{name}.pt"))
    graph = inlined_graph(module)
    inputs, _ = load_file(os.path.join(out_dir, f"{name}_inputs.safetensors"))
    ref, metadata = load_file(os.path.join(out_dir, f"{name}_ref.safetensors"))
    if metadata.get("inspect") == "no":  # other attention forms (forms_models.py): not this rule's
        print(f"== {name}: skipped (ref metadata inspect=no)")
        return []
    arg_names = [argument.name for argument in module.forward.schema.arguments[1:]]
    sites = find_sites(graph)
    print(f"== {name}: forward({', '.join(arg_names)}), {len(sites)} score matmul(s), "
          f"ref layers={metadata['layers']}")
    if len(sites) != int(metadata["layers"]):
        return [f"{name}: {len(sites)} sites in the graph, ref has {metadata['layers']}"]

    qk_values = [value for site in sites for value in site[1:4]]
    captured = run_with_extra_outputs(module, graph, qk_values, [inputs[a] for a in arg_names])
    problems = []
    for layer, (score, _, _, _) in enumerate(sites):
        q_chain, k_chain = chain_to_projection(score.inputsAt(0)), chain_to_projection(score.inputsAt(1))
        module_name = site_module(q_chain)
        q, k, scaled = captured[3 * layer : 3 * layer + 3]
        q_diff = (q - ref[f"layer{layer}.q"]).abs().max().item()
        k_diff = (k - ref[f"layer{layer}.k"]).abs().max().item()
        # The prescale measured: scaled scores / (q . k) where the product is not tiny.
        if q.shape[1] != k.shape[1]:  # grouped-query keys: expand as the model does
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        dots = q.double() @ k.double().transpose(-1, -2)
        big = dots.abs() > 1e-2
        prescale = (scaled.double()[big] / dots[big]).median().item()
        if any(use.user.kind().endswith("_") for use in score.output().uses()):
            # Changed in place right after the product (T5 adds its position bias with add_):
            # the value read back is no longer the product; take the factor stepped over on q.
            prescale = step_over_scaling(score.inputsAt(0))[1]
        print(f"-- site {layer}: module {module_name}, prescale {prescale!r}, "
              f"max|q - ref| {q_diff:.2g}, max|k - ref| {k_diff:.2g}")
        if module_name != metadata[f"layer{layer}.module"] or not math.isclose(
            prescale, float(metadata[f"layer{layer}.prescale"]), rel_tol=1e-5
        ):
            problems.append(f"{name} site {layer}: module/prescale differ from the ref metadata")
        if max(q_diff, k_diff) > ATOL:
            problems.append(f"{name} site {layer}: q/k differ from the ref by {max(q_diff, k_diff):.3g}")
        if show_chains:
            print("   q: " + " -> ".join(describe(n) for n in q_chain))
            print("   k: " + " -> ".join(describe(n) for n in k_chain))
            print("   score: " + " -> ".join(describe(n) for n in [score] + chain_to_softmax(score.output())))

    if show_ir and sites:
        score = sites[0][0]
        projections = {chain_to_projection(score.inputsAt(0))[0], chain_to_projection(score.inputsAt(1))[0]}
        lines, legend = ir_excerpt(graph, projections, chain_to_softmax(score.output())[-1])
        print("-- IR of site 0, projections to softmax:")
        print("\n".join("   " + line for line in lines))
        print("   where " + legend)
    return problems


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--chains", action="store_true", help="print the op chains of every site")
    parser.add_argument("--ir", action="store_true", help="print the IR of site 0's attention")
    args = parser.parse_args(argv)
    names = args.names or sorted(
        f[: -len("_ref.safetensors")] for f in os.listdir(args.dir) if f.endswith("_ref.safetensors")
    )
    problems = [p for name in names for p in inspect(args.dir, name, args.chains, args.ir)]
    for problem in problems:
        print("MISMATCH " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
