#!/usr/bin/python3
"""Figures of bench/run_all.sh: the engine-time plot and a summary of every JSON in out/bench.

    tools/bench_plot.py OUT_DIR --svg bench/engine_time.svg   # engine time vs tokens, both scopes,
                                                              # next to the Gram-GEMM floor
    tools/bench_plot.py OUT_DIR --summary                     # markdown tables on stdout

Reads OUT_DIR/engine.json (bench_engine, Google Benchmark JSON), forward.json, store.json and
blas_*.json (bench_forward), memory_*.json (bench_memory), e2e.json (bench/e2e.py); files that
are missing are left out. Standard library only; the SVG is written by hand.
"""

import argparse
import glob
import json
import math
import os
import re
import sys

SERIES = [  # (benchmark prefix, label, colour, dashed)
    ("BM_EngineSequence", "engine, sequence scope", "#1f77b4", False),
    ("BM_GramSequence", "Gram GEMMs, sequence scope (floor)", "#1f77b4", True),
    ("BM_GramSequenceInPlace", "same, reading the site in place", "#9ecae1", True),
    ("BM_EngineAll", "engine, all scope", "#d62728", False),
    ("BM_GramAll", "Gram GEMMs, all scope (floor)", "#d62728", True),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def to_ms(bench):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[bench.get("time_unit", "ns")]
    return bench["real_time"] * scale


def engine_points(engine):
    """{prefix: [(tokens, ms)]} from bench_engine's JSON (aggregates skipped)."""
    points = {}
    for b in engine.get("benchmarks", []):
        if b.get("run_type") == "aggregate" or b.get("error_occurred"):
            continue
        m = re.match(r"(BM_\w+)/(\d+)", b["name"])
        if m:
            points.setdefault(m.group(1), []).append((int(m.group(2)), to_ms(b)))
    return {k: sorted(v) for k, v in points.items()}


def write_svg(points, context, path):
    width, height = 720, 460
    left, right, top, bottom = 80, 290, 40, 60
    xs = [t for s in points.values() for t, _ in s]
    ys = [ms for s in points.values() for _, ms in s]
    x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    pw, ph = width - left - right, height - top - bottom

    def px(t):
        return left + (math.log10(t) - x0) / (x1 - x0) * pw

    def py(ms):
        return top + ph - (math.log10(ms) - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">'
           f'Metric engine time vs tokens (4 heads, 7 scales, head_dim 64, 1 thread)</text>']
    for e in range(x0, x1 + 1):  # decades and their 2x, 5x ticks
        for mult in (1, 2, 5):
            t = mult * 10 ** e
            if t > 10 ** x1:
                break
            x = px(t)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" '
                       f'stroke="#ddd" stroke-width="{1 if mult == 1 else 0.5}"/>')
            out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{t:,}</text>')
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        label = f"{10 ** e:g}"
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 18}" text-anchor="middle">tokens (log)</text>')
    out.append(f'<text x="20" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 20 {top + ph / 2})">time per iteration, ms (log)</text>')
    ly = top + 10
    for prefix, label, colour, dashed in SERIES:
        series = points.get(prefix)
        if not series:
            continue
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{px(t):.1f},{py(ms):.1f}" for i, (t, ms) in enumerate(series))
        out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for t, ms in series:
            shape = (f'<rect x="{px(t) - 4:.1f}" y="{py(ms) - 4:.1f}" width="8" height="8" fill="white" stroke="{colour}"/>'
                     if dashed else f'<circle cx="{px(t):.1f}" cy="{py(ms):.1f}" r="4" fill="{colour}"/>')
            out.append(shape)
            out.append(f'<text x="{px(t) + 6:.1f}" y="{py(ms) - 6:.1f}" font-size="10" fill="{colour}">{ms:.0f}</text>')
        lx = left + pw + 16
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 28}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 34}" y="{ly + 4}">{label}</text>')
        ly += 20
    ly += 10
    for line in context:
        out.append(f'<text x="{left + pw + 16}" y="{ly}" font-size="10" fill="#444">{line}</text>')
        ly += 14
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def summary(out_dir):
    lines = []
    engine = load(os.path.join(out_dir, "engine.json"))
    if engine:
        pts = engine_points(engine)
        lines += ["| engine case | Gram GEMMs (ms) | engine (ms) | engine / GEMMs |", "|---|---|---|---|"]
        for scope, eng, gram in (("sequence", "BM_EngineSequence", "BM_GramSequence"),
                                 ("all", "BM_EngineAll", "BM_GramAll")):
            g = dict(pts.get(gram, []))
            in_place = dict(pts.get(gram + "InPlace", []))
            for tokens, ms in pts.get(eng, []):
                if tokens in g:
                    lines.append(f"| `{scope}`, {tokens} tokens | {g[tokens]:.1f} | {ms:.0f} | "
                                 f"{ms / g[tokens]:.2f}x |")
                if tokens in in_place:
                    lines.append(f"| `{scope}`, {tokens} tokens, GEMMs reading the site in place | "
                                 f"{in_place[tokens]:.1f} | {ms:.0f} | {ms / in_place[tokens]:.2f}x |")
        lines.append("")
    forward = load(os.path.join(out_dir, "forward.json"))
    store = load(os.path.join(out_dir, "store.json"))
    if forward and store:  # the store's figures from their own process replace any in forward.json
        forward["benchmarks"] = [b for b in forward["benchmarks"] if not b["name"].startswith("BM_StoreAdd")]
        forward["benchmarks"] += store["benchmarks"]
    if forward:
        lines += ["| forward variant | plain ms | variant ms | ratio: median of pairs [p25, p75] | "
                  "ratio of minima | pairs | captured MB/forward | in sink ms | 1 + sink/plain |",
                  "|---|---|---|---|---|---|---|---|---|"]
        others = []
        for b in forward["benchmarks"]:
            if b.get("error_occurred"):
                others.append(f"{b['name']}: skipped ({b.get('error_message', '')})")
                continue
            name = b["name"].split("/iterations")[0].replace("/manual_time", "")
            if name.startswith("BM_Forward/"):
                sink = (f"{b['sink_ms']:.1f} | {b['ratio_sink']:.4f}" if "sink_ms" in b else "- | -")
                lines.append(f"| `{name}` | {b['plain_ms']:.0f} | {b['variant_ms']:.0f} | {b['ratio']:.3f} "
                             f"[{b['ratio_p25']:.3f}, {b['ratio_p75']:.3f}] | {b['ratio_min']:.3f} | "
                             f"{b['pairs']:.0f} | {b['captured_MB']:.1f} | {sink} |")
            elif name.startswith("BM_GraphDiff"):
                others.append(f"{name}: {b['nodes_plain']:.0f} nodes plain, {b['nodes_instrumented']:.0f} "
                              f"instrumented, {b['capture_nodes']:.0f} capture ops, other differences: "
                              f"{b.get('label', '')}")
            elif name.startswith("BM_CaptureOp"):
                others.append(f"{name}: {to_ms(b) * 1e6:.0f} ns per call (wall), {b['cpu_time']:.0f} "
                              f"{b['time_unit']} CPU")
            elif name.startswith("BM_StoreAdd"):
                others.append(f"{name}: {b['ms_per_forward']:.1f} ms per forward ({b['GB/s']:.2f} GB/s)")
        lines += [""] + others + [""]
    for path in sorted(glob.glob(os.path.join(out_dir, "blas_*.json"))):
        for b in load(path)["benchmarks"]:
            if b["name"].startswith("BM_ForwardOnce") and not b.get("error_occurred"):
                lines.append(f"BLAS {os.path.basename(path)}: forward {b['plain_ms'] / 1e3:.2f} s "
                             f"(median of {b['iterations']}, {b['threads']:.0f} threads; {b.get('label', '')})")
    mem = []
    for path in glob.glob(os.path.join(out_dir, "memory_*.json")):
        mem.append(load(path))
    if mem:
        lines += ["", "| scope | tokens | heads | threads | item memory (MB) | q/k (MB) | RSS before engine (MB) | peak RSS (MB) | engine extra (MB) | engine (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in sorted(mem, key=lambda m: (m["scope"], m["heads"], m["tokens"], m.get("item_memory_MB", 256))):
            lines.append(f"| {m['scope']} | {m['tokens']} | {m['heads']} | {m['threads']} | {m.get('item_memory_MB', 256):.0f} | "
                         f"{m['qk_MB']:.0f} | {m['rss_before_MB']:.0f} | "
                         f"{m['peak_MB']:.0f} | {m['engine_extra_MB']:.0f} | {m['engine_s']:.2f} |")
    for path in sorted(glob.glob(os.path.join(out_dir, "e2e*.json"))):
        s = load(path)["summary"]
        pairs = ", ".join(f"{r:.3f}" for r in s["ratio_wall_pairs"])
        lines += ["", f"e2e ({os.path.basename(path)}): {s['sequences']} sequences, {s['rounds']} ABBA "
                  f"round(s); plain {s['plain_wall_s']:.1f} s (forwards {s['plain_forward_s']:.1f} s), "
                  f"capture {s['capture_wall_s']:.1f} s (forwards {s['capture_forward_s']:.1f} s, metrics "
                  f"{s['capture_metrics_s']:.1f} s); ratio of medians {s['ratio_wall']:.3f}, per pair "
                  f"{pairs}; forwards only {s.get('ratio_forwards', float('nan')):.3f}; peak RSS plain "
                  f"{s['plain_peak_rss_MB']:.0f} MB, capture {s['capture_peak_rss_MB']:.0f} MB"]
    print("\n".join(lines))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--svg", help="write the engine-time plot here")
    p.add_argument("--summary", action="store_true", help="print markdown tables of every figure")
    a = p.parse_args(argv)
    if a.svg:
        engine = load(os.path.join(a.out_dir, "engine.json"))
        if engine is None:
            sys.exit(f"bench_plot: {a.out_dir}/engine.json not found (run bench/run_all.sh)")
        ctx = engine.get("context", {})
        context = [f"{ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz",
                   f"{ctx.get('date', '')[:10]}", "dashed: float Gram GEMMs over the",
                   "same pairs (no exact method skips them)"]
        write_svg(engine_points(engine), context, a.svg)
    if a.summary:
        summary(a.out_dir)
    if not a.svg and not a.summary:
        p.error("nothing to do: give --svg and/or --summary")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
