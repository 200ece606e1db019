#!/usr/bin/env python3
"""Table of bench/http/run_load.sh's runs: per mode, throughput (wrk's requests / seconds of the
measured runs), the server's CPU time per request, wrk's client-side p50/p99 (median over
rounds), and from the server's latency logs the p50/p99 of captured and uncaptured requests
(handler start to response built, pooled over rounds, warm-up requests left out). Ratios against the uninstrumented server are taken
round by round (the four loads of a round are adjacent in time) and their median is shown;
the latency ratio is of the pooled p99s.

    summarise.py OUT_DIR
"""
import json
import re
import statistics
import sys
from pathlib import Path

MODES = ["uninstrumented", "off", "10", "100"]


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    v = sorted(values)
    x = (len(v) - 1) * p / 100
    lo = int(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


def latencies(out, mode, cache={}):
    """Server-side latencies (ms) of the captured and uncaptured requests of `mode`, warm-up
    requests left out."""
    if mode not in cache:
        warm = json.loads((out / f"{mode}.health").read_text())["served"]
        cap, unc = [], []
        for line in (out / f"{mode}.log").read_text().splitlines()[1:]:
            endpoint, status, request, captured, tokens, queue_ms, total_ms = line.split()
            if status != "200" or int(request) < warm:
                continue
            (cap if captured == "1" else unc).append(float(total_ms))
        cache[mode] = (cap, unc)
    return cache[mode]


def main(out):
    out = Path(out)
    runs = {}  # (mode, round) -> dict
    for wrk in sorted(out.glob("*.wrk")):
        mode, rnd = wrk.stem.rsplit("-", 1)
        m = re.search(r"wrk-summary (.*)", wrk.read_text())
        if not m:
            continue
        fields = dict(kv.split("=") for kv in m.group(1).split())
        cap, unc = latencies(out, mode)
        cpu_ms = float("nan")
        if (out / f"{wrk.stem}.cpu").exists():
            ticks, per_second = (out / f"{wrk.stem}.cpu").read_text().split()
            cpu_ms = 1000 * int(ticks) / int(per_second) / max(int(fields["requests"]), 1)
        runs[(mode, int(rnd))] = {
            "cpu_ms": cpu_ms,
            "rps": int(fields["requests"]) / float(fields["seconds"]),
            "non2xx": int(fields["non2xx"]) + int(fields["errors"]),
            "p50": float(fields["p50_ms"]), "p99": float(fields["p99_ms"]),
        }
    rounds = sorted({r for _, r in runs})
    loads = [float(l.split()[2]) for l in (out / "load.txt").read_text().splitlines()]
    print(f"{len(rounds)} interleaved rounds; 1-minute load average during them "
          f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f})")
    header = ("mode", "req/s", "x uninstr.", "CPU ms/req", "x uninstr.", "wrk p50 ms", "wrk p99 ms", "uncapt. p50", "uncapt. p99",
              "p99 x", "capt. n", "capt. p50", "capt. p99", "errors")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for mode in MODES:
        mine = [runs[(mode, r)] for r in rounds if (mode, r) in runs]
        if not mine:
            continue
        base = [runs[("uninstrumented", r)] for r in rounds if (mode, r) in runs]
        rps = sum(x["rps"] for x in mine) / len(mine)
        rps_ratio = statistics.median(x["rps"] / b["rps"] for x, b in zip(mine, base))
        cpu = statistics.median(x["cpu_ms"] for x in mine)
        cpu_ratio = statistics.median(x["cpu_ms"] / b["cpu_ms"] for x, b in zip(mine, base))
        cap, unc = latencies(out, mode)
        p99_ratio = percentile(unc, 99) / percentile(latencies(out, "uninstrumented")[1], 99)
        print(f"| {mode} | {rps:.0f} | {rps_ratio:.3f} | {cpu:.3f} | {cpu_ratio:.3f} | {statistics.median(x['p50'] for x in mine):.2f} "
              f"| {statistics.median(x['p99'] for x in mine):.2f} | {percentile(unc, 50):.2f} "
              f"| {percentile(unc, 99):.2f} | {p99_ratio:.3f} | {len(cap)} "
              f"| {percentile(cap, 50):.2f} | {percentile(cap, 99):.2f} | {sum(x['non2xx'] for x in mine)} |")
    print("per round req/s (first 10): " + "; ".join(
        f"r{r}: " + ", ".join(f"{m} {runs[(m, r)]['rps']:.0f}" for m in MODES if (m, r) in runs)
        for r in rounds[:10]))


if __name__ == "__main__":
    main(sys.argv[1])
