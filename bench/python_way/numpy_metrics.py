"""The three scaling metrics of SPEC section 3, written plainly with numpy, one query at a time.

This is the way the study's notebooks compute them (and what a user without qkscope writes):
float64 copies of one head's q and k, then for every query its keys in scope, the distances
at every scale, the pooled percentile threshold, and a weighted Pearson correlation per query
and scale. Loops over queries in Python, vectorised over keys and scales only. No screening, no
Gram identity: every distance is the direct ||c q - k / c|| in float64, so it is also an
independent reference for qkscope's engine.
"""

import math

import numpy as np

DEFAULT_SCALES = (0.2, 0.4, 0.8, 1.0, 1.25, 2.5, 5.0)


def key_ranges(sequence, scope):
    """Per query, the [begin, end) range of the keys it is paired with.

    Tokens are sorted by (sequence, position), as capture stores them, so the keys of a query's
    sequence are one contiguous block; `causal` keeps those up to and including the query.
    """
    if scope not in ("sequence", "causal", "all"):
        raise ValueError(f"pair scope: expected sequence, causal or all, got '{scope}'")
    n = len(sequence)
    if scope == "all":
        return [(0, n)] * n
    starts = np.flatnonzero(np.r_[True, sequence[1:] != sequence[:-1]])
    ends = np.r_[starts[1:], n]
    ranges = []
    for begin, end in zip(starts, ends):
        for i in range(begin, end):
            ranges.append((begin, i + 1) if scope == "causal" else (begin, end))
    return ranges


def weighted_r(x, y, d):
    """SPEC's weighted Pearson r of x and y with weights (d - y)^2; None for zero variance."""
    # Zero variance is decided exactly (qkscope's design choice 2): all x or all y equal.
    if x.min() == x.max() or y.min() == y.max():
        return None
    w = (d - y) ** 2
    sw = w.sum()
    mx = (w * x).sum() / sw
    my = (w * y).sum() / sw
    cxy = (w * (x - mx) * (y - my)).sum() / sw
    cxx = (w * (x - mx) ** 2).sum() / sw
    cyy = (w * (y - my) ** 2).sum() / sw
    return cxy / math.sqrt(cxx * cyy)


def head_metrics(q, k, ranges, scales, percentile=0.5, center=False):
    """One head: q, k float32 [N, D]. Returns threshold, per-scale sums and the norm medians."""
    q = q.astype(np.float64)
    k = k.astype(np.float64)
    if center:
        q = q - q.mean(axis=0)
        k = k - k.mean(axis=0)
    c = np.asarray(scales, dtype=np.float64)[:, None, None]
    # Pass 1: every distance of every pair in scope at every scale, pooled for the threshold.
    distances = []
    for i, (begin, end) in enumerate(ranges):
        keys = k[begin:end]
        distances.append(np.sqrt(((c * q[i] - keys[None] / c) ** 2).sum(axis=2)))  # [scales, keys]
    threshold = float(np.percentile(np.concatenate([y.ravel() for y in distances]), percentile))
    # Pass 2: per query and scale, the near keys and their weighted correlation.
    r_sum = np.zeros(len(scales))
    queries = np.zeros(len(scales), dtype=np.int64)
    near_pairs = np.zeros(len(scales), dtype=np.int64)
    for i, (begin, end) in enumerate(ranges):
        x = k[begin:end] @ q[i]
        y = distances[i]
        for s in range(len(scales)):
            near = y[s] < threshold
            count = int(near.sum())
            near_pairs[s] += count
            if count < 3:
                continue
            r = weighted_r(x[near], y[s][near], threshold)
            if r is not None:
                r_sum[s] += r
                queries[s] += 1
    q_norm = float(np.median(np.linalg.norm(q, axis=1)))
    k_norm = float(np.median(np.linalg.norm(k, axis=1)))
    return {
        "threshold": threshold,
        "wcorr": [r_sum[s] / queries[s] if queries[s] else None for s in range(len(scales))],
        "queries": queries.tolist(),
        "near_pairs": near_pairs.tolist(),
        "median_q_norm": q_norm,
        "median_k_norm": k_norm,
        "c_norm": math.sqrt(k_norm / q_norm),  # sqrt(1 / rho), rho = median |q| / median |k|
    }


def choose(scales, values, rule="closest"):
    """SPEC's choice of c: closest to -1 (or most negative); ties by |log c|, then smaller c."""
    best = None
    for c, v in zip(scales, values):
        if v is None:
            continue
        key = abs(v + 1.0) if rule == "closest" else v
        if best is None:
            best = (key, c)
            continue
        bkey, bc = best
        if key < bkey:
            best = (key, c)
        elif key == bkey:
            lc, lb = abs(math.log(c)), abs(math.log(bc))
            # |log c| within 1e-12 relative ties (0.8 and 1.25), then the smaller c wins.
            if lc < lb * (1 - 1e-12) or (abs(lc - lb) <= 1e-12 * max(lc, lb) and c < bc):
                best = (key, c)
    return None if best is None else best[1]


def compute_tables(layers, sequence, scales=DEFAULT_SCALES, scope="sequence", percentile=0.5,
                   center=False, select="closest", progress=None):
    """All heads of all layers. layers: list of dicts with 'q', 'k' float32 [N, H, D], 'module',
    'prescale'. Returns (heads rows, scales rows) as lists of dicts, in heads.csv's order."""
    ranges = key_ranges(np.asarray(sequence), scope)
    per_head = []
    for li, layer in enumerate(layers):
        for h in range(layer["q"].shape[1]):
            m = head_metrics(layer["q"][:, h], layer["k"][:, h], ranges, scales, percentile, center)
            per_head.append((li, h, layer, m))
            if progress:
                progress(li, h)
    # Metric 2 needs n(h, c) of every head first: S = R * n / mean over heads of n.
    mean_n = [np.mean([m["queries"][s] for *_, m in per_head]) for s in range(len(scales))]
    heads, rows = [], []
    for li, h, layer, m in per_head:
        scaled = [None if r is None or mean_n[s] == 0 else r * m["queries"][s] / mean_n[s]
                  for s, r in enumerate(m["wcorr"])]
        heads.append({
            "layer": li, "head": h, "module": layer["module"],
            "c_wcorr": choose(scales, m["wcorr"], select),
            "c_wcorr_scaled": choose(scales, scaled, select),
            "c_norm": m["c_norm"], "threshold": m["threshold"],
            "median_q_norm": m["median_q_norm"], "median_k_norm": m["median_k_norm"],
            "tokens": layer["q"].shape[0], "prescale": layer["prescale"],
        })
        for s, c in enumerate(scales):
            rows.append({"layer": li, "head": h, "c": c, "wcorr": m["wcorr"][s], "wcorr_scaled": scaled[s],
                         "queries": m["queries"][s], "near_pairs": m["near_pairs"][s]})
    return heads, rows


HEAD_COLUMNS = ["layer", "head", "module", "c_wcorr", "c_wcorr_scaled", "c_norm", "threshold",
                "median_q_norm", "median_k_norm", "tokens", "prescale"]
SCALE_COLUMNS = ["layer", "head", "c", "wcorr", "wcorr_scaled", "queries", "near_pairs"]


def write_csv(path, columns, rows):
    """SPEC section 4's columns; undefined values as empty cells, floats by repr (round-trip)."""
    def cell(v):
        return "" if v is None else repr(v) if isinstance(v, float) else str(v)
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(columns) + "\n")
        for row in rows:
            f.write(",".join(cell(row[c]) for c in columns) + "\n")
