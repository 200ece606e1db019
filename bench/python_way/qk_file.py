"""Reads capture's q/k file (SPEC section 2, safetensors) with numpy and the standard library.

The `safetensors` Python package is not in Debian 12; the format is small enough to read here:
8-byte little-endian header length, a JSON header, then raw little-endian data.
"""

import json
import struct

import numpy as np

DTYPES = {"F32": np.float32, "I64": np.int64}


def read_qk(path):
    """Returns (tensors: name -> array, metadata: dict)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name}: expected dtype F32 or I64, got {info['dtype']}")
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, metadata


def layers_of(path):
    """capture's saved q/k as compute_tables() takes them: (layers, sequence index)."""
    tensors, meta = read_qk(path)
    layers = []
    for li in (int(s) for s in meta["layers"].split(",")):
        layers.append({"q": tensors[f"layer{li}.q"], "k": tensors[f"layer{li}.k"],
                       "module": meta.get(f"layer{li}.module", ""),
                       "prescale": float(meta.get(f"layer{li}.prescale", "1"))})
    return layers, tensors["tokens.sequence"]
