#!/usr/bin/python3
"""Draws bench/scale/scale.json (run_scale.py) as an SVG: time per token and peak RSS against
corpus size, two panels, log-scaled corpus axis.

    bench/scale/plot_scale.py [bench/scale/scale.json] [--svg bench/scale/scale.svg]

Standard library only (matplotlib is not a dependency of the project); the SVG is written by
hand like tools/bench_plot.py's.
"""

import argparse
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 860, 360
PANEL_W, PANEL_H = 330, 230
LEFT = [80, 510]
TOP = 60


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_ticks(hi, n=5):
    """Ticks 0 .. >= hi with a 1-2-5 step."""
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(hi / step)) + 1)]


def panel(svg, x0, title, xs, series, y_label, y_fmt, notes=None):
    """series: list of (label, colour, dashed, values), one value per run (xs: the runs' corpus
    sizes, repeats allowed). Every run is a hollow dot; the line joins each size's best (lowest)
    value: on a shared machine a repeat only adds interference, never removes work."""
    lo, hi = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    ymax = max(v for *_, values in series for v in values) * 1.15
    ticks = nice_ticks(ymax)
    ymax = ticks[-1]

    def px(x):
        return x0 + (math.log10(x) - lo) / (hi - lo) * PANEL_W

    def py(y):
        return TOP + PANEL_H - y / ymax * PANEL_H

    svg.append(f'<text x="{x0 + PANEL_W / 2}" y="{TOP - 28}" text-anchor="middle" font-weight="bold">{esc(title)}</text>')
    svg.append(f'<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/>')
    for t in ticks:
        svg.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{x0 - 6}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="11">{y_fmt(t)}</text>')
    sizes = sorted(set(xs))
    for x in sizes:
        svg.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP + PANEL_H}" y2="{TOP + PANEL_H + 4}" stroke="#888"/>')
        svg.append(f'<text x="{px(x):.1f}" y="{TOP + PANEL_H + 17}" text-anchor="middle" font-size="11">'
                   f'{x / 1e6:.2g}M</text>')
    svg.append(f'<text x="{x0 + PANEL_W / 2}" y="{TOP + PANEL_H + 36}" text-anchor="middle" font-size="12">'
               f'corpus tokens (log scale)</text>')
    svg.append(f'<text transform="translate({x0 - 52},{TOP + PANEL_H / 2}) rotate(-90)" text-anchor="middle" '
               f'font-size="12">{esc(y_label)}</text>')
    for i, (label, colour, dashed, values) in enumerate(series):
        best = [min(v for xv, v in zip(xs, values) if xv == x) for x in sizes]
        points = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(sizes, best))
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        svg.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, v in zip(sizes, best):
            svg.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}"/>')
            if notes:  # what the best run of that size ran beside (its mean load average)
                note = notes[[i for i, (xv, vv) in enumerate(zip(xs, values)) if xv == x and vv == v][0]]
                svg.append(f'<text x="{px(x):.1f}" y="{py(v) + 18:.1f}" text-anchor="middle" font-size="10" '
                           f'fill="#555">{esc(note)}</text>')
        for x, v in zip(xs, values):
            svg.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="5" fill="none" stroke="{colour}"/>')
        ly = TOP - 14 + 0 * i
        lx = x0 + 4 + i * (PANEL_W / max(1, len(series)))
        svg.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash}/>')
        svg.append(f'<text x="{lx + 22}" y="{ly}" font-size="11">{esc(label)}</text>')


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="?", default=os.path.join(HERE, "scale.json"))
    p.add_argument("--svg", default=os.path.join(HERE, "scale.svg"))
    args = p.parse_args()
    with open(args.json) as f:
        data = json.load(f)
    runs = sorted(data["runs"], key=lambda r: r["tokens"])
    xs = [r["tokens"] for r in runs]
    us = 1e6
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="sans-serif" font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']
    # CPU time only: on the shared 2-core machine the wall time measured the neighbours' load
    # (2.5x to 10x the CPU time); the JSON keeps it.
    panel(svg, LEFT[0], "CPU time (user + sys) per corpus token", xs, [
        ("capture, whole process", "#1f77b4", False, [(r["user_s"] + r["sys_s"]) / r["tokens"] * us for r in runs]),
    ], "µs per token", lambda t: f"{t:g}",
        notes=[f"load {sum(r['load_samples']) / len(r['load_samples']):.1f}" for r in runs])
    # Linear fit of each size's best CPU time: a fixed part (LibTorch's start, the model, the
    # metrics over the bounded sample) plus a constant cost per corpus token.
    sizes = sorted(set(xs))
    best = [min(r["user_s"] + r["sys_s"] for r in runs if r["tokens"] == x) for x in sizes]
    if len(sizes) > 1:
        fx, fy = sum(sizes) / len(sizes), sum(best) / len(best)
        b = sum((x - fx) * (y - fy) for x, y in zip(sizes, best)) / sum((x - fx) ** 2 for x in sizes)
        a = fy - b * fx
        worst = max(abs(y - a - b * x) for x, y in zip(sizes, best))
        for i, line in enumerate([f"best runs: CPU = {a:.1f} s + {b * us:.1f} µs × tokens",
                                  f"(residuals ≤ {worst:.1f} s)"]):
            svg.append(f'<text x="{LEFT[0] + PANEL_W / 2}" y="{TOP + PANEL_H - 26 + 14 * i}" text-anchor="middle" '
                       f'font-size="11" fill="#555">{esc(line)}</text>')
    rss = [r["max_rss_kb"] / 1024 for r in runs]
    rss_series = [("peak RSS", "#d62728", False, rss)]
    # baseline_runs (optional): the same sizes with the code before a change (e.g. the corpus read
    # whole before the first batch), drawn dashed for comparison; one run per size.
    base = {r["tokens"]: r["max_rss_kb"] / 1024 for r in data.get("baseline_runs", [])}
    if base and all(x in base for x in xs):
        rss_series.append((data.get("baseline_label", "before"), "#999999", True, [base[x] for x in xs]))
    panel(svg, LEFT[1], f"peak RSS (--max-tokens {data['max_tokens']:,})", xs, rss_series,
          "MB", lambda t: f"{t:g}")
    # Slope of RSS against corpus tokens (least squares over every run): what still grows.
    mx, my = sum(xs) / len(xs), sum(rss) / len(rss)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, rss)) / sum((x - mx) ** 2 for x in xs)
    svg.append(f'<text x="{LEFT[1] + PANEL_W / 2}" y="{TOP + PANEL_H - 12}" text-anchor="middle" font-size="11" '
               f'fill="#555">slope {slope * 1024 * 1024:.0f} bytes per corpus token</text>')
    loads = [x for r in runs for x in r["load_samples"]]
    svg.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11" fill="#555">'
               f'capture, built-in example (bert_kjv.pt), corpus.txt repeated; --threads {data["threads"]}; '
               f'{data["nproc"]} cores, load average {min(loads):.1f}-{max(loads):.1f} during the runs; {esc(data["date"])}</text>')
    svg.append("</svg>")
    with open(args.svg, "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
