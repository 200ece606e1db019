#!/usr/bin/python3
"""qkscope against the Python way, side by side: same model, corpus, batches and threads.

    bench/python_way/run_bench.py [--capture build/tools/capture/capture] [--rounds 1]
        [--threads 1] [--metrics-sequences N] [--corpus models/example/corpus.txt] [--work-dir /tmp/qkscope-python-way]
        [--json out/bench/python_way.json]

Each round runs capture, then the Python way, then capture again (ABA: capture's two runs
bracket the slow one, so a change of load shows), each its own process under /usr/bin/time -v,
over the built-in example (models/example: bert_kjv.pt, corpus.txt, vocab.txt), and records
wall, user and system seconds, peak RSS, each program's own split (capture: its summary line;
the Python way: timings.json) and the load average sampled every 2 s; then `capture --qk` on
the q/k saved from the corpus, three times, for the engine alone. Then it checks that the
two ways' tables are equal (check_tables.compare, the ctest's tolerances) and prints a markdown
table. --metrics-sequences N times the numpy metrics on the first N sequences only and
extrapolates to the corpus by the pairs in scope (the numpy path's cost per query and scale is
a Python-level step plus work linear in the query's keys).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bench", "scale"))
from run_scale import LoadSampler, parse_time_v  # noqa: E402

EXAMPLE = os.path.join(ROOT, "models", "example")


def timed(cmd):
    with LoadSampler() as load:
        proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    r = parse_time_v(proc.stderr)
    r["load_samples"] = load.samples
    return r, proc.stderr


def run_capture(args, out):
    r, stderr = timed([args.capture, "--model", os.path.join(EXAMPLE, "bert_kjv.pt"), "--text",
               args.corpus, "--vocab", os.path.join(EXAMPLE, "vocab.txt"),
               "--out", out, "--threads", str(args.threads)])
    m = re.search(r"(\d+) of (\d+) tokens kept.*capture ([\d.]+) s, metrics ([\d.]+) s", stderr)
    if not m:
        raise RuntimeError(f"capture's summary line not found in its stderr:\n{stderr[-2000:]}")
    r.update(tokens=int(m.group(2)), capture_s=float(m.group(3)), metrics_s=float(m.group(4)))
    return r


def run_python(args, out):
    cmd = [sys.executable, os.path.join(HERE, "python_way.py"), "--model", os.path.join(EXAMPLE, "bert_kjv.pt"),
           "--text", args.corpus, "--vocab", os.path.join(EXAMPLE, "vocab.txt"),
           "--out", out, "--threads", str(args.threads)]
    if args.metrics_sequences:
        cmd += ["--metrics-sequences", str(args.metrics_sequences)]
    r, _ = timed(cmd)
    with open(os.path.join(out, "timings.json")) as f:
        r["own"] = json.load(f)
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capture", default=os.path.join(ROOT, "build", "tools", "capture", "capture"))
    p.add_argument("--corpus", default=os.path.join(EXAMPLE, "corpus.txt"), help="text, one sequence a line")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--metrics-sequences", type=int)
    p.add_argument("--work-dir", default="/tmp/qkscope-python-way")
    p.add_argument("--json", default=os.path.join(ROOT, "out", "bench", "python_way.json"))
    args = p.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    capture_runs, python_runs = [], []
    for rnd in range(args.rounds):
        capture_runs.append(run_capture(args, os.path.join(args.work_dir, "capture")))
        print(f"run_bench: round {rnd}: capture wall {capture_runs[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        python_runs.append(run_python(args, os.path.join(args.work_dir, "python")))
        print(f"run_bench: round {rnd}: python wall {python_runs[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        capture_runs.append(run_capture(args, os.path.join(args.work_dir, "capture")))
        print(f"run_bench: round {rnd}: capture wall {capture_runs[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)

    # The engine alone on the saved q/k, best of 3, for the record (the same tables from the
    # same vectors; under load its metrics phase ran slower than inside a capture run).
    saved = os.path.join(args.work_dir, "capture.safetensors")
    subprocess.run([args.capture, "--model", os.path.join(EXAMPLE, "bert_kjv.pt"), "--text", args.corpus,
                    "--vocab", os.path.join(EXAMPLE, "vocab.txt"), "--out", os.path.join(args.work_dir, "saved"),
                    "--save-qk", saved, "--threads", str(args.threads), "--quiet"], check=True)
    engine_runs = []
    for _ in range(3):
        r, stderr = timed([args.capture, "--qk", saved, "--out", os.path.join(args.work_dir, "engine"),
                           "--threads", str(args.threads)])
        m = re.search(r"metrics ([\d.]+) s", stderr)
        if not m:
            raise RuntimeError(f"capture --qk: summary line not found in its stderr:\n{stderr[-2000:]}")
        r["metrics_s"] = float(m.group(1))
        engine_runs.append(r)
    os.remove(saved)

    # Equal results: the Python way's tables against capture's, with the ctest's tolerances.
    import check_tables
    mismatches = check_tables.Mismatches()
    extrapolation = None
    if not args.metrics_sequences:
        for name in ("heads.csv", "scales.csv"):
            want = check_tables.read_csv(os.path.join(args.work_dir, "capture", name))
            got = [{k: (None if v == "" else v if k == "module" else float(v)) for k, v in row.items()}
                   for row in check_tables.read_csv(os.path.join(args.work_dir, "python", name))]
            check_tables.compare(name, want, got, check_tables.TIGHT, mismatches)
    else:
        # Scale the subset's numpy time by the pairs in scope (sum of squared sequence lengths)
        # and, separately, by the queries; report both (they bracket the per-query overhead).
        import eager_capture
        seqs = eager_capture.read_text(args.corpus, os.path.join(EXAMPLE, "vocab.txt"))
        sub = seqs[:args.metrics_sequences]
        extrapolation = {"pairs": sum(len(s) ** 2 for s in seqs) / sum(len(s) ** 2 for s in sub),
                         "queries": sum(map(len, seqs)) / sum(map(len, sub))}

    def med(values):
        return statistics.median(values)

    # capture: wall per phase from its summary (one engine thread: its metrics' wall is at least
    # their CPU time), CPU of the whole process from time -v. Python way: wall and CPU per phase.
    c = {"wall": med([r["wall_s"] for r in capture_runs]),
         "cpu": med([r["user_s"] + r["sys_s"] for r in capture_runs]),
         "capture": med([r["capture_s"] for r in capture_runs]),
         "metrics": med([r["metrics_s"] for r in capture_runs]),
         "rss_mb": max(r["max_rss_kb"] for r in capture_runs) / 1024}
    own = [r["own"] for r in python_runs]
    before = ("imports", "tokenize", "load_model", "capture")
    pw = {"wall": med([r["wall_s"] for r in python_runs]),
          "cpu": med([r["user_s"] + r["sys_s"] for r in python_runs]),
          "capture": med([sum(o["seconds"][k] for k in before) for o in own]),
          "capture_cpu": med([sum(o["cpu_seconds"][k] for k in before) for o in own]),
          "metrics": med([o["seconds"]["metrics"] for o in own]),
          "metrics_cpu": med([o["cpu_seconds"]["metrics"] for o in own]),
          "rss_mb": max(r["max_rss_kb"] for r in python_runs) / 1024}
    if extrapolation:
        factor = extrapolation["pairs"]
        pw["wall"] += pw["metrics"] * (factor - 1)
        pw["cpu"] += pw["metrics_cpu"] * (factor - 1)
        pw["metrics"] *= factor
        pw["metrics_cpu"] *= factor
    loads = [x for r in capture_runs + python_runs for x in r["load_samples"]]
    c["engine_best_wall"] = min(r["metrics_s"] for r in engine_runs)
    ratios = {"metrics_wall": pw["metrics"] / c["metrics"],
              # One engine thread (--threads 1): its wall is at least its CPU time, so numpy's CPU
              # over it is a lower bound of the CPU ratio, whatever the load did to the wall.
              "metrics_cpu_lower_bound": pw["metrics_cpu"] / c["metrics"],
              "total_wall": pw["wall"] / c["wall"], "total_cpu": pw["cpu"] / c["cpu"]}
    summary = {
        "capture": c, "python": pw, "ratios": ratios,
        "load": {"min": min(loads), "median": med(loads), "max": max(loads)},
        "extrapolation": extrapolation, "threads": args.threads, "rounds": args.rounds,
        "tokens": capture_runs[0]["tokens"], "mismatches": mismatches.lines,
        "runs": {"capture": capture_runs, "python": python_runs, "engine_on_saved_qk": engine_runs},
    }
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    note = " (numpy metrics extrapolated)" if extrapolation else ""
    if extrapolation:
        tables = "not compared (subset)"
    elif mismatches.lines:
        tables = "DIFFER: " + "; ".join(mismatches.lines[:5])
    else:
        tables = "equal within the ctest's tolerances"
    print(f"| {summary['tokens']:,} tokens, --threads {args.threads} | qkscope `capture` | the Python way{note} | ratio |\n"
          f"|---|---|---|---|\n"
          f"| tokenize + model + q/k, wall (s) | {c['capture']:.1f} | {pw['capture']:.1f} (CPU {pw['capture_cpu']:.1f}) | {pw['capture'] / c['capture']:.1f}× |\n"
          f"| metrics, wall (s) | {c['metrics']:.2f} | {pw['metrics']:.1f} (CPU {pw['metrics_cpu']:.1f}) | "
          f"**{ratios['metrics_wall']:.0f}×** |\n"
          f"| metrics, CPU (s) | ≤ {c['metrics']:.2f} (one engine thread: CPU ≤ wall) | {pw['metrics_cpu']:.1f} | "
          f"**≥ {ratios['metrics_cpu_lower_bound']:.0f}×** |\n"
          f"| engine alone, `capture --qk` on the saved q/k, best wall of 3 (s) | {c['engine_best_wall']:.2f} "
          f"| | |\n"
          f"| whole run, wall (s) | {c['wall']:.1f} | {pw['wall']:.1f} | **{ratios['total_wall']:.1f}×** |\n"
          f"| whole run, CPU user + sys (s) | {c['cpu']:.1f} | {pw['cpu']:.1f} | **{ratios['total_cpu']:.1f}×** |\n"
          f"| peak RSS (MB) | {c['rss_mb']:.0f} | {pw['rss_mb']:.0f} | {pw['rss_mb'] / c['rss_mb']:.1f}× |\n\n"
          f"load average {min(loads):.1f}-{max(loads):.1f} (median {med(loads):.1f}) on {os.cpu_count()} cores; "
          f"tables {tables}")
    if mismatches.lines:
        sys.exit(1)


if __name__ == "__main__":
    main()
