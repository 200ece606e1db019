#!/usr/bin/python3
"""Scale of a capture run: the built-in example model over its corpus repeated to N tokens.

    bench/scale/run_scale.py [--capture build/tools/capture/capture] [--sizes 250000,500000,1000000,4000000]
                             [--max-tokens 100000] [--threads 1] [--work-dir /tmp/qkscope-scale]
                             [--json bench/scale/scale.json]

For each size: writes the corpus (models/example/corpus.txt's lines repeated in order until the
run holds at least N tokens, [CLS]/[SEP] included) under --work-dir (never in the repository: the
4M-token file is 14 MB), runs `capture --text ... --vocab ... --max-tokens M` under
/usr/bin/time -v, and records wall, user and system seconds, peak RSS, capture's own split
(its summary line: capture and metrics seconds), and the load average sampled every 2 s
during the run. bench/scale/plot_scale.py draws the JSON.

Token counts come from the Python tokenizer of the example (models/example/bert_tokenizer.py,
the same ids as capture's WordPiece, see models/example/README.md) on one copy of the corpus,
chunked as capture chunks long lines (windows of max_length - 2 pieces between [CLS] and [SEP]).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "models", "example")
sys.dont_write_bytecode = True  # keep models/ free of __pycache__
sys.path.insert(0, EXAMPLE)
from bert_tokenizer import BertTokenizer  # noqa: E402


def line_tokens(corpus, vocab, max_length):
    """Tokens capture makes of each non-blank line: pieces plus [CLS]/[SEP] per chunk."""
    tokenizer = BertTokenizer(vocab)
    counts = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            pieces = len(tokenizer.tokenize(line))
            chunks = max(1, -(-pieces // (max_length - 2)))
            counts.append((line, pieces + 2 * chunks))
    return counts


def write_corpus(path, counts, target):
    """The corpus's lines in order, over and over, until at least `target` tokens."""
    total = lines = 0
    with open(path, "w", encoding="utf-8") as out:
        while total < target:
            for line, n in counts:
                out.write(line + "\n")
                total += n
                lines += 1
                if total >= target:
                    break
    return total, lines


class LoadSampler:
    """/proc/loadavg's 1-minute figure every `period` seconds while a run lasts."""

    def __init__(self, period=2.0):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with open("/proc/loadavg") as f:
                self.samples.append(float(f.read().split()[0]))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def parse_time_v(text):
    """The fields of GNU time -v this benchmark uses."""
    def field(name):
        m = re.search(r"^\s*" + re.escape(name) + r": (.+)$", text, re.M)
        if not m:
            raise RuntimeError(f"/usr/bin/time -v output: expected a '{name}' line, got:\n{text[-2000:]}")
        return m.group(1).strip()
    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return {
        "wall_s": seconds,
        "user_s": float(field("User time (seconds)")),
        "sys_s": float(field("System time (seconds)")),
        "max_rss_kb": int(field("Maximum resident set size (kbytes)")),
        "exit_status": int(field("Exit status")),
    }


def run_capture(args, corpus, out_dir):
    cmd = ["/usr/bin/time", "-v", args.capture, "--model", os.path.join(EXAMPLE, "bert_kjv.pt"),
           "--text", corpus, "--vocab", os.path.join(EXAMPLE, "vocab.txt"), "--out", out_dir,
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]
    with LoadSampler() as load:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = parse_time_v(proc.stderr)
    # capture's summary: "... N of M tokens kept ...; capture X s, metrics Y s."
    m = re.search(r"(\d+) of (\d+) tokens kept.*capture ([\d.]+) s, metrics ([\d.]+) s", proc.stderr)
    if not m:
        raise RuntimeError(f"capture's summary line not found in its stderr:\n{proc.stderr[-2000:]}")
    result.update(tokens_kept=int(m.group(1)), tokens_seen=int(m.group(2)),
                  capture_s=float(m.group(3)), metrics_s=float(m.group(4)),
                  load_samples=load.samples, command=" ".join(cmd))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capture", default=os.path.join(ROOT, "build", "tools", "capture", "capture"))
    p.add_argument("--sizes", default="250000,500000,1000000,4000000")
    p.add_argument("--max-tokens", type=int, default=100000)
    p.add_argument("--max-length", type=int, default=128, help="capture's default for the example")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work-dir", default="/tmp/qkscope-scale")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "scale", "scale.json"))
    p.add_argument("--keep-corpora", action="store_true", help="do not delete the generated corpora")
    p.add_argument("--append", action="store_true",
                   help="add these runs to --json's (a repeat under other load; the plot takes each size's best)")
    args = p.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    counts = line_tokens(os.path.join(EXAMPLE, "corpus.txt"), os.path.join(EXAMPLE, "vocab.txt"),
                         args.max_length)
    runs = []
    if args.append and os.path.exists(args.json):
        with open(args.json) as f:
            previous = json.load(f)
        if (previous["max_tokens"], previous["threads"]) != (args.max_tokens, args.threads):
            raise SystemExit(f"--append: {args.json} has --max-tokens {previous['max_tokens']} --threads "
                             f"{previous['threads']}, this run {args.max_tokens} and {args.threads}")
        runs = previous["runs"]
    for size in (int(s) for s in args.sizes.split(",")):
        corpus = os.path.join(args.work_dir, f"corpus_{size}.txt")
        tokens, lines = write_corpus(corpus, counts, size)
        print(f"scale: {size}: {tokens} tokens in {lines} lines -> {corpus}", file=sys.stderr, flush=True)
        r = run_capture(args, corpus, os.path.join(args.work_dir, f"out_{size}"))
        if r["tokens_seen"] != tokens:
            raise RuntimeError(f"corpus {corpus}: expected capture to see {tokens} tokens, it saw {r['tokens_seen']}")
        r.update(target=size, tokens=tokens, lines=lines, corpus_bytes=os.path.getsize(corpus))
        print(f"scale: {tokens} tokens: wall {r['wall_s']:.1f} s, cpu {r['user_s'] + r['sys_s']:.1f} s, "
              f"peak RSS {r['max_rss_kb'] / 1024:.0f} MB, load {min(r['load_samples']):.1f}-"
              f"{max(r['load_samples']):.1f}", file=sys.stderr, flush=True)
        runs.append(r)
        if not args.keep_corpora:
            os.remove(corpus)
        with open(args.json, "w") as f:  # after every size: a partial result survives an interruption
            json.dump({"max_tokens": args.max_tokens, "threads": args.threads, "max_length": args.max_length,
                       "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
                       "runs": runs}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
