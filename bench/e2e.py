#!/usr/bin/python3
"""End-to-end cost of capture: `capture --ids` over a corpus against plain inference
(bench_e2e) over the same batches.

    bench/e2e.py --build build-bench --model build-bench/models/bert_base.pt \
        --sequences 2000 --rounds 2 --out out/bench

The corpus is random ids (fixed seed, lengths uniform in [--min-length, 128]) written to
OUT/e2e_ids.txt. Runs alternate plain, capture, capture, plain, ... (ABBA), each in its own
process; the capture runs analyse as well (sequence scope, default scales) and keep a
--max-tokens sample, as a user would run it. Writes OUT/e2e.json: each run's wall time and peak
RSS, the capture's own split (forwards, metrics), medians and the ratios. --compare-rounds N
adds the in-process comparison of bench_e2e --compare (summary "in_process").
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time


def write_ids(path, sequences, min_length, max_length, vocab, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(sequences):
            length = rng.randint(min_length, max_length)
            f.write(" ".join(str(rng.randrange(1000, vocab)) for _ in range(length)) + "\n")


def run(cmd):
    """Runs cmd; returns (wall seconds, peak RSS in MB of that process, stdout, stderr)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"e2e: {' '.join(cmd)} failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, stdout, stderr


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build-bench")
    p.add_argument("--model", default=None, help="default: BUILD/models/bert_base.pt")
    p.add_argument("--sequences", type=int, default=2000)
    p.add_argument("--min-length", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=50000)
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each: 2 plain + 2 capture)")
    p.add_argument("--out", default="out/bench")
    p.add_argument("--compare-rounds", type=int, default=0,
                   help="also run `bench_e2e --compare` (plain and instrumented forwards "
                        "alternating per batch in one process, same --max-tokens) this many "
                        "rounds; the first warms up. 0: not run")
    a = p.parse_args(argv)
    model = a.model or os.path.join(a.build, "models", "bert_base.pt")
    os.makedirs(a.out, exist_ok=True)
    ids = os.path.join(a.out, "e2e_ids.txt")
    write_ids(ids, a.sequences, a.min_length, a.max_length, a.vocab, a.seed)

    plain_cmd = [os.path.join(a.build, "bench", "bench_e2e"), "--model", model,
                 "--ids", ids, "--batch-size", str(a.batch_size)]
    capture_out = os.path.join(a.out, "e2e_capture")
    capture_cmd = [os.path.join(a.build, "tools", "capture", "capture"), "--model", model,
                   "--ids", ids, "--batch-size", str(a.batch_size),
                   "--max-tokens", str(a.max_tokens), "--out", capture_out]
    runs = []
    order = []
    for r in range(a.rounds):
        order += ["plain", "capture", "capture", "plain"] if r % 2 == 0 else ["capture", "plain", "plain", "capture"]
    for kind in order:
        wall, rss, out, err = run(plain_cmd if kind == "plain" else capture_cmd)
        entry = {"kind": kind, "wall_s": wall, "peak_rss_MB": rss}
        if kind == "plain":
            entry.update(json.loads(out.strip().splitlines()[-1]))
        else:
            m = re.search(r"capture ([0-9.]+) s, metrics ([0-9.]+) s", err)
            if m:
                entry["forward_s"] = float(m.group(1))
                entry["metrics_s"] = float(m.group(2))
            m = re.search(r"capture: (\d+) of (\d+) tokens kept", err)
            if m:
                entry["tokens_kept"] = int(m.group(1))
                entry["tokens"] = int(m.group(2))
        runs.append(entry)
        print(f"e2e: {kind:7s} wall {wall:8.2f} s  " +
              (f"forwards {entry.get('forward_s', 0):8.2f} s" if "forward_s" in entry else ""),
              file=sys.stderr, flush=True)

    def med(kind, key):
        vals = [r[key] for r in runs if r["kind"] == kind and r.get(key) is not None]
        return statistics.median(vals) if vals else None

    summary = {
        "sequences": a.sequences, "batch_size": a.batch_size, "max_tokens": a.max_tokens,
        "rounds": a.rounds, "model": model,
        "plain_wall_s": med("plain", "wall_s"), "capture_wall_s": med("capture", "wall_s"),
        "plain_forward_s": med("plain", "forward_s"), "capture_forward_s": med("capture", "forward_s"),
        "capture_metrics_s": med("capture", "metrics_s"),
        "plain_peak_rss_MB": med("plain", "peak_rss_MB"), "capture_peak_rss_MB": med("capture", "peak_rss_MB"),
    }
    summary["ratio_wall"] = summary["capture_wall_s"] / summary["plain_wall_s"]
    if summary["capture_forward_s"] and summary["plain_forward_s"]:
        summary["ratio_forwards"] = summary["capture_forward_s"] / summary["plain_forward_s"]
    # Per ABBA neighbour pairs (run 2i with run 2i+1): robust to drift in machine load.
    pair_ratios = []
    for i in range(0, len(runs) - 1, 2):
        x, y = runs[i], runs[i + 1]
        c, pl = (x, y) if x["kind"] == "capture" else (y, x)
        pair_ratios.append(c["wall_s"] / pl["wall_s"])
    summary["ratio_wall_pairs"] = pair_ratios
    summary["ratio_wall_pairs_median"] = statistics.median(pair_ratios)
    if a.compare_rounds > 0:
        # Separate processes see the machine's load drift; one process alternating per batch
        # does not, so this ratio isolates what instrumentation costs the forwards themselves.
        _, _, out, _ = run(plain_cmd + ["--compare", "--rounds", str(a.compare_rounds),
                                        "--max-tokens", str(a.max_tokens)])
        summary["in_process"] = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(a.out, "e2e.json"), "w") as f:
        json.dump({"summary": summary, "runs": runs}, f, indent=1)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
