#!/usr/bin/python3
"""The Python way: eager PyTorch with forward hooks, then the metrics in numpy, per query.

    bench/python_way/python_way.py --model models/example/bert_kjv.pt
        (--text models/example/corpus.txt --vocab models/example/vocab.txt | --ids ids.txt)
        --out DIR [--heads 4] [--batch-size 8] [--max-length 128] [--threads 1]
        [--first-sequences N] [--metrics-sequences N] [--pairs sequence] [--write-ids FILE]

Writes DIR/heads.csv and DIR/scales.csv in capture's format (SPEC section 4) and
DIR/timings.json: wall and CPU seconds for tokenizing, loading the model, the forwards with hooks
("capture"), the metrics, and the peak RSS (getrusage). The same defaults as capture: scales
0.2 ... 5, `sequence` pairs, percentile 0.5, no centring, `closest` selection, batches of 8 in
corpus order. --metrics-sequences N computes the metrics on the first N sequences only, for
timing the numpy path on a subset (its cost is linear in the sequences in `sequence` scope).
"""

import argparse
import json
import os
import resource
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--text")
    p.add_argument("--vocab")
    p.add_argument("--ids")
    p.add_argument("--out", required=True)
    p.add_argument("--heads", type=int, default=4, help="attention heads per layer (not in the weights)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (capture --threads)")
    p.add_argument("--first-sequences", type=int, help="run only the first N sequences of the corpus")
    p.add_argument("--metrics-sequences", type=int, help="metrics on the first N captured sequences only")
    p.add_argument("--pairs", default="sequence", choices=["sequence", "causal", "all"])
    p.add_argument("--percentile", type=float, default=0.5)
    p.add_argument("--select", default="closest", choices=["closest", "min"])
    p.add_argument("--write-ids", help="also write the token ids (capture --ids's format) here")
    p.add_argument("--save-npz", help="also save the hooked q/k here (numpy .npz)")
    args = p.parse_args()
    if bool(args.text) == bool(args.ids) or (args.text and not args.vocab):
        p.error("expected --text with --vocab, or --ids")
    return args


class Phases:
    """Wall and CPU seconds (this process) of each phase: under load the CPU time is the
    figure that compares (the wall depends on what else runs)."""

    def __init__(self):
        self.wall, self.cpu = {}, {}

    def start(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self, name):
        self.wall[name] = time.perf_counter() - self._wall
        self.cpu[name] = time.process_time() - self._cpu


def main():
    args = parse_args()
    phases = Phases()
    t0, c0 = time.perf_counter(), time.process_time()
    phases.start()
    import numpy as np  # imports are part of the Python way's cost: timed from here
    import torch
    import eager_capture
    import numpy_metrics
    torch.set_num_threads(args.threads)
    phases.stop("imports")

    phases.start()
    if args.text:
        sequences = eager_capture.read_text(args.text, args.vocab, args.max_length)
    else:
        sequences = eager_capture.read_ids(args.ids)
    if args.first_sequences:
        sequences = sequences[:args.first_sequences]
    if args.write_ids:
        eager_capture.write_ids(args.write_ids, sequences)
    phases.stop("tokenize")

    phases.start()
    model, config = eager_capture.load_eager_bert(args.model, args.heads)
    phases.stop("load_model")

    phases.start()
    layers, sequence_index = eager_capture.capture_qk(model, config, sequences, args.batch_size)
    phases.stop("capture")
    tokens = len(sequence_index)
    if args.save_npz:
        np.savez(args.save_npz, sequence=sequence_index,
                 **{f"layer{i}.{n}": layer[n] for i, layer in enumerate(layers) for n in "qk"})

    if args.metrics_sequences:
        n = int(np.searchsorted(sequence_index, args.metrics_sequences))
        layers = [dict(layer, q=layer["q"][:n], k=layer["k"][:n]) for layer in layers]
        sequence_index = sequence_index[:n]
    phases.start()
    t = time.perf_counter()
    heads, rows = numpy_metrics.compute_tables(
        layers, sequence_index, scope=args.pairs, percentile=args.percentile, select=args.select,
        progress=lambda li, h: print(f"python_way: layer {li} head {h} done "
                                     f"({time.perf_counter() - t:.1f} s)", file=sys.stderr, flush=True))
    phases.stop("metrics")

    os.makedirs(args.out, exist_ok=True)
    numpy_metrics.write_csv(os.path.join(args.out, "heads.csv"), numpy_metrics.HEAD_COLUMNS, heads)
    numpy_metrics.write_csv(os.path.join(args.out, "scales.csv"), numpy_metrics.SCALE_COLUMNS, rows)
    phases.wall["total"] = time.perf_counter() - t0
    phases.cpu["total"] = time.process_time() - c0
    times = phases.wall
    result = {"seconds": times, "cpu_seconds": phases.cpu, "sequences": len(sequences), "tokens": tokens,
              "metrics_tokens": len(sequence_index), "threads": args.threads,
              "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
    with open(os.path.join(args.out, "timings.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"python_way: {tokens} tokens ({len(sequences)} sequences); metrics over {len(sequence_index)}; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()), file=sys.stderr)


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
