#!/usr/bin/python3
"""Generates examples/example_qk.safetensors, the bundled q/k file (SPEC section 2).

Synthetic queries and keys of 2 sites x 4 heads (head_dim 16) for a few dozen short sequences,
written with numpy and a hand-made safetensors header, so the file is also a check of qkscope's
reader against an independent writer. Deterministic: a fixed seed, no other input.

Each head has its own structure, so the scale c qkscope chooses differs between heads:
  - keys are rotated, noisy copies of the queries' content plus a per-head key offset (the
    translation between the query and key clouds that real models show);
  - queries are multiplied by s_h and keys divided by it, s_h in {0.5, 1, 2, 4}: attention
    q.k is unchanged, but the norm ratio and the distances between q and k are not, so the
    norm-ratio scale c_norm = sqrt(median|k| / median|q|) and the best-correlation scale move
    with s_h (and the offset moves them apart from each other).

Usage: python3 tools/make_example_qk.py [OUTPUT]   (default: examples/example_qk.safetensors)
"""

import json
import os
import struct
import sys

import numpy as np

SEED = 20240611
N_SEQUENCES = 30
MIN_LEN, MAX_LEN = 8, 16          # tokens per sequence, inclusive
N_HEADS, HEAD_DIM = 4, 16
MODULES = ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
# Norm imbalance s_h per layer and head: queries * s_h, keys / s_h.
IMBALANCE = [[0.5, 1.0, 2.0, 4.0], [4.0, 0.5, 1.0, 2.0]]
# Size of the key offset per layer and head, relative to a typical vector norm.
KEY_OFFSET = [[0.0, 0.5, 1.0, 0.25], [0.75, 0.0, 0.25, 1.5]]
MAX_BYTES = 400_000


def random_rotation(rng, dim, angle):
    """A rotation of R^dim by at most about `angle` radians: the Cayley transform
    (I - A)^-1 (I + A) of a small random skew-symmetric A is orthogonal."""
    a = rng.normal(size=(dim, dim))
    skew = (a - a.T) / 2
    skew *= np.tan(angle / 2) / np.linalg.norm(skew, 2)
    eye = np.eye(dim)
    return np.linalg.solve(eye - skew, eye + skew)


def make_tokens(rng):
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, size=N_SEQUENCES)
    sequence = np.repeat(np.arange(N_SEQUENCES), lengths).astype(np.int64)
    position = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
    ids = rng.integers(1000, 30000, size=len(sequence)).astype(np.int64)
    ids[position == 0] = 101                                    # [CLS]
    ids[np.r_[position[1:] == 0, True]] = 102                   # [SEP] closes each sequence
    return sequence, position, ids


def make_head(rng, layer, head, sequence, position, ids):
    """q, k of one head: [N, HEAD_DIM] float32."""
    n = len(position)
    # Tokens of one sequence gather around its topic, some sequences tightly: that gives the
    # queries that have several near keys, on which the weighted correlation is computed.
    topic = rng.normal(size=(N_SEQUENCES, HEAD_DIM))
    spread = np.exp(rng.uniform(np.log(0.05), np.log(1.0), size=N_SEQUENCES))
    vocab = rng.normal(size=(30000, HEAD_DIM // 2))            # content of each token id
    pos_emb = rng.normal(size=(MAX_LEN, HEAD_DIM // 2))         # position structure
    detail = np.concatenate([vocab[ids], pos_emb[position]], axis=1)
    w_q = rng.normal(size=(HEAD_DIM, HEAD_DIM)) / np.sqrt(HEAD_DIM)
    base = topic[sequence] + spread[sequence, None] * (detail @ w_q.T)
    rotation = random_rotation(rng, HEAD_DIM, angle=0.2 + 0.2 * head)
    offset = rng.normal(size=HEAD_DIM)
    offset *= KEY_OFFSET[layer][head] * np.median(np.linalg.norm(base, axis=1)) / np.linalg.norm(offset)
    noise = 0.3 * spread[sequence, None]
    q = base + noise * rng.normal(size=(n, HEAD_DIM))
    k = base @ rotation.T + noise * rng.normal(size=(n, HEAD_DIM)) + offset
    s = IMBALANCE[layer][head]
    return (q * s).astype(np.float32), (k / s).astype(np.float32)


def safetensors_bytes(tensors, metadata):
    """The file: 8-byte LE header length, JSON header padded with spaces to 8, LE data."""
    header = {"__metadata__": metadata}
    offset = 0
    for name, (dtype, array) in tensors:
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    data = b"".join(array.astype(array.dtype.newbyteorder("<")).tobytes() for _, (_, array) in tensors)
    return struct.pack("<Q", len(text)) + text + data


def check(blob, tensors, metadata):
    """Reads the bytes back the plain way (numpy over the header) and compares."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    assert header.pop("__metadata__") == metadata
    data = blob[8 + n:]
    for name, (dtype, array) in tensors:
        entry = header.pop(name)
        begin, end = entry["data_offsets"]
        back = np.frombuffer(data[begin:end], dtype={"F32": "<f4", "I64": "<i8"}[dtype])
        assert entry["shape"] == list(array.shape) and np.array_equal(back, array.ravel())
    assert not header and end == len(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "examples", "example_qk.safetensors")
    rng = np.random.default_rng(SEED)
    sequence, position, ids = make_tokens(rng)

    # Token arrays first: 8-byte elements before 4-byte ones keeps every tensor aligned.
    tensors = [("tokens.sequence", ("I64", sequence)),
               ("tokens.position", ("I64", position)),
               ("tokens.id", ("I64", ids))]
    metadata = {"format": "qkscope.qk.v1",
                "layers": ",".join(str(layer) for layer in range(len(MODULES))),
                "tokens_seen": str(len(sequence)),
                "sequences_seen": str(N_SEQUENCES)}
    for layer, module in enumerate(MODULES):
        heads = [make_head(rng, layer, h, sequence, position, ids) for h in range(N_HEADS)]
        q = np.stack([qh for qh, _ in heads], axis=1)          # [N, H, D]
        k = np.stack([kh for _, kh in heads], axis=1)
        tensors += [(f"layer{layer}.q", ("F32", q)), (f"layer{layer}.k", ("F32", k))]
        metadata[f"layer{layer}.module"] = module
        metadata[f"layer{layer}.prescale"] = "1"

    blob = safetensors_bytes(tensors, metadata)
    check(blob, tensors, metadata)
    if len(blob) > MAX_BYTES:
        sys.exit(f"make_example_qk.py: {len(blob)} bytes, more than the {MAX_BYTES} allowed")
    with open(out, "wb") as f:
        f.write(blob)
    print(f"{out}: {len(sequence)} tokens in {N_SEQUENCES} sequences, {len(blob)} bytes")
    for layer in range(len(MODULES)):
        q = dict(tensors)[f"layer{layer}.q"][1]
        k = dict(tensors)[f"layer{layer}.k"][1]
        med_q = np.median(np.linalg.norm(q, axis=2), axis=0)
        med_k = np.median(np.linalg.norm(k, axis=2), axis=0)
        print(f"  layer {layer} c_norm per head:", " ".join(f"{c:.3f}" for c in np.sqrt(med_k / med_q)))


if __name__ == "__main__":
    main()
