#!/usr/bin/python3
"""The numpy metrics against capture's tables on a small case (ctest python_way_tables).

    check_tables.py --capture build/tools/capture/capture --work-dir DIR [--lines 40]

The first --lines lines of the built-in example's corpus go through capture --text --vocab
(with --save-qk) and through the Python way (models/example/bert_tokenizer.py, the eager
hf_bert.BertModel with forward hooks). Checked, each against an independent computation:

1. token ids and sequence numbers: capture's saved `tokens.id`/`tokens.sequence` equal the
   Python tokenizer's (so the benchmark's two ways read the same input);
2. q/k: the hooks' vectors against capture's saved ones (max absolute difference reported; at
   most 1e-5 of the largest |component| allowed: float32 rounding of a different kernel order);
3. the tables: numpy_metrics on capture's saved q/k (the same float32 inputs) against heads.csv
   and scales.csv. Tolerances: `queries`, `near_pairs`, `tokens` and the chosen c exactly;
   threshold and norms 1e-12 relative; wcorr and wcorr_scaled 1e-9 absolute. Both sides work
   in float64 from the same float32 vectors: the engine knows every distance to 1e-12 relative
   (design choice 5) and numpy computes it directly, so near sets can differ only for a pair
   within 1e-12 of the threshold, and r (sums of at most 128 weighted terms in double, summed in
   another order) to ~1e-14; observed here: 2e-14. Any formula slip moves r by far more;
4. the tables from the hooks' q/k the same way when they equal capture's bit for bit (as on
   LibTorch 1.13 here); otherwise with tolerances 1000 times the q/k difference allows
   (threshold and norms 1e-4 relative, r 1e-3, counts within 1 %): the threshold and every
   distance move by about the vectors' relative difference;
5. the `causal` and `all` pair scopes: capture --qk --pairs on the saved file against numpy on
   it, with the tolerances of 3 (observed: 2e-15 and 1.5e-11).
Exit status 0 when all hold; otherwise 1 with every mismatch on stderr.
"""

import argparse
import csv
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402

import eager_capture  # noqa: E402
import numpy_metrics  # noqa: E402
import qk_file  # noqa: E402

EXAMPLE = os.path.join(eager_capture.ROOT, "models", "example")
TIGHT = {"rel": 1e-12, "abs": 1e-9, "count": 0.0}
LOOSE = {"rel": 1e-4, "abs": 1e-3, "count": 0.01}


def read_csv(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


class Mismatches:
    def __init__(self):
        self.lines = []

    def __call__(self, where, text):
        self.lines.append(f"{where}: {text}")


def compare(name, want_rows, got_rows, tol, report):
    """want: capture's CSV rows (strings); got: numpy_metrics rows (values). Returns the largest
    differences seen, for the log."""
    worst = {"rel": 0.0, "abs": 0.0, "count": 0.0}
    if len(want_rows) != len(got_rows):
        report(name, f"expected {len(want_rows)} rows (capture), numpy gave {len(got_rows)}")
        return worst
    for want, got in zip(want_rows, got_rows):
        where = f"{name} layer {want['layer']} head {want['head']}" + (f" c {want['c']}" if "c" in want else "")
        for column, text in want.items():
            value = got[column]
            if column == "module":
                if text != value:
                    report(where, f"module: capture '{text}', numpy '{value}'")
                continue
            if text == "" or value is None:
                if not (text == "" and value is None):
                    report(where, f"{column}: capture '{text}', numpy {value!r} (one is undefined)")
                continue
            a, b = float(text), float(value)
            if column in ("layer", "head", "c", "c_wcorr", "c_wcorr_scaled", "tokens", "prescale"):
                if a != b:
                    report(where, f"{column}: capture {a!r}, numpy {b!r}: expected equal")
            elif column in ("queries", "near_pairs"):
                diff = abs(a - b) / max(1.0, a)
                worst["count"] = max(worst["count"], diff)
                if diff > tol["count"]:
                    report(where, f"{column}: capture {a:.0f}, numpy {b:.0f}")
            elif column in ("wcorr", "wcorr_scaled"):
                worst["abs"] = max(worst["abs"], abs(a - b))
                if abs(a - b) > tol["abs"]:
                    report(where, f"{column}: capture {a!r}, numpy {b!r}: |diff| {abs(a - b):.3g} > {tol['abs']}")
            else:  # threshold, c_norm, median norms
                diff = abs(a - b) / abs(a)
                worst["rel"] = max(worst["rel"], diff)
                if diff > tol["rel"]:
                    report(where, f"{column}: capture {a!r}, numpy {b!r}: relative diff {diff:.3g} > {tol['rel']}")
    return worst


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capture", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--lines", type=int, default=40)
    args = p.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    report = Mismatches()

    text = os.path.join(args.work_dir, "lines.txt")
    with open(os.path.join(EXAMPLE, "corpus.txt"), encoding="utf-8") as f:
        lines = [line for line in f if line.strip()][:args.lines]
    with open(text, "w", encoding="utf-8") as f:
        f.writelines(lines)
    out = os.path.join(args.work_dir, "capture")
    qk = os.path.join(args.work_dir, "capture.safetensors")
    model = os.path.join(EXAMPLE, "bert_kjv.pt")
    cmd = [args.capture, "--model", model, "--text", text, "--vocab", os.path.join(EXAMPLE, "vocab.txt"),
           "--out", out, "--save-qk", qk, "--threads", "1", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"check_tables: {' '.join(cmd)} failed with status {proc.returncode}:\n{proc.stderr}")
    want_heads = read_csv(os.path.join(out, "heads.csv"))
    want_scales = read_csv(os.path.join(out, "scales.csv"))

    # 1. Inputs.
    sequences = eager_capture.read_text(text, os.path.join(EXAMPLE, "vocab.txt"))
    tensors, _ = qk_file.read_qk(qk)
    ids = np.concatenate([np.asarray(s) for s in sequences])
    if not np.array_equal(tensors["tokens.id"], ids):
        report("inputs", f"capture's token ids ({tensors['tokens.id'].size}) differ from "
                         f"bert_tokenizer.py's ({ids.size})")

    # 2. q/k of the hooks against capture's.
    eager_model, config = eager_capture.load_eager_bert(model, num_heads=4)
    eager_layers, eager_sequence = eager_capture.capture_qk(eager_model, config, sequences)
    saved_layers, saved_sequence = qk_file.layers_of(qk)
    if not np.array_equal(eager_sequence, saved_sequence):
        report("inputs", "sequence numbers of the hooked tokens differ from capture's tokens.sequence")
    diff, largest = 0.0, 0.0
    for e, s in zip(eager_layers, saved_layers):
        for n in "qk":
            if e[n].shape != s[n].shape:
                report("q/k", f"shape: hooks {e[n].shape}, capture {s[n].shape}")
                continue
            diff = max(diff, float(np.abs(e[n] - s[n]).max()))
            largest = max(largest, float(np.abs(s[n]).max()))
    if diff > 1e-5 * largest:
        report("q/k", f"hooks differ from capture's saved q/k by {diff:.3g} (largest |component| {largest:.3g})")

    # 3. numpy on capture's q/k against capture's tables.
    heads, rows = numpy_metrics.compute_tables(saved_layers, saved_sequence)
    w1 = compare("heads.csv", want_heads, heads, TIGHT, report)
    w2 = compare("scales.csv", want_scales, rows, TIGHT, report)
    print(f"check_tables: {len(lines)} lines, {ids.size} tokens, {len(heads)} heads; numpy on capture's "
          f"q/k: largest differences: relative {max(w1['rel'], w2['rel']):.3g}, r {max(w1['abs'], w2['abs']):.3g}, "
          f"counts {max(w1['count'], w2['count']):.3g}; hooks' q/k differ by {diff:.3g}", file=sys.stderr)

    # 4. The Python way end to end: numpy on the hooks' q/k.
    if diff == 0.0:
        # Bit-identical inputs: numpy is deterministic, so step 3 already covers these tables.
        if not all(np.array_equal(e[n], s[n]) for e, s in zip(eager_layers, saved_layers) for n in "qk"):
            report("q/k", "expected bit-identical vectors")
    else:
        heads, rows = numpy_metrics.compute_tables(eager_layers, eager_sequence)
        compare("heads.csv (hooks)", want_heads, heads, LOOSE, report)
        compare("scales.csv (hooks)", want_scales, rows, LOOSE, report)

    # 5. The other pair scopes on the same saved q/k (capture --qk --pairs), same tolerances.
    for scope in ("causal", "all"):
        scope_out = os.path.join(args.work_dir, scope)
        cmd = [args.capture, "--qk", qk, "--out", scope_out, "--pairs", scope, "--threads", "1", "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"check_tables: {' '.join(cmd)} failed with status {proc.returncode}:\n{proc.stderr}")
        heads, rows = numpy_metrics.compute_tables(saved_layers, saved_sequence, scope=scope)
        compare(f"heads.csv ({scope})", read_csv(os.path.join(scope_out, "heads.csv")), heads, TIGHT, report)
        compare(f"scales.csv ({scope})", read_csv(os.path.join(scope_out, "scales.csv")), rows, TIGHT, report)

    if report.lines:
        print("check_tables: MISMATCH\n" + "\n".join(report.lines), file=sys.stderr)
        sys.exit(1)
    print("check_tables: all equal within tolerance", file=sys.stderr)


if __name__ == "__main__":
    main()
