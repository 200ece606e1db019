"""Minimal safetensors writer and reader (there is no `safetensors` package on this machine).

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian unsigned header
length N, then N bytes of UTF-8 JSON mapping each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the header),
plus an optional "__metadata__" map of string to string, then the raw little-endian data.
"""

import json
import struct

import numpy as np
import torch

# safetensors dtype names for the tensor types this project writes.
_DTYPES = {
    torch.float32: ("F32", np.dtype("<f4")),
    torch.float64: ("F64", np.dtype("<f8")),
    torch.int64: ("I64", np.dtype("<i8")),
    torch.int32: ("I32", np.dtype("<i4")),
    torch.uint8: ("U8", np.dtype("u1")),
    torch.bool: ("BOOL", np.dtype("?")),
}
_NUMPY_BY_NAME = {name: np_dtype for name, np_dtype in _DTYPES.values()}

# The header is padded with spaces so the data starts 8-byte aligned, as the reference writer does.
_ALIGN = 8


def save_file(tensors, path, metadata=None):
    """Write `tensors` (name -> torch.Tensor) and `metadata` (str -> str) to `path`.

    Tensors are stored in name order, contiguous, little-endian.
    """
    header = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors metadata values must be strings: {bad}")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in _DTYPES:
            raise TypeError(f"{name}: unsupported dtype {tensor.dtype}")
        dtype_name, np_dtype = _DTYPES[tensor.dtype]
        data = tensor.numpy().astype(np_dtype, copy=False).tobytes()
        header[name] = {
            "dtype": dtype_name,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % _ALIGN)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for data in blobs:
            f.write(data)


def load_file(path):
    """Read a safetensors file; returns (tensors: name -> torch.Tensor, metadata: dict).

    Checks that every tensor's byte range matches its dtype and shape and that the data
    section is fully covered, so a truncated or inconsistent file raises ValueError.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if 8 + header_len > len(raw):
        raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
    header = json.loads(raw[8 : 8 + header_len].decode("utf-8"))
    data = raw[8 + header_len :]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    covered = 0
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        np_dtype = _NUMPY_BY_NAME.get(entry["dtype"])
        if np_dtype is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if begin != covered or end - begin != expected or end > len(data):
            raise ValueError(f"{path}: {name}: bad data_offsets {entry['data_offsets']}")
        covered = end
        array = np.frombuffer(data, dtype=np_dtype, count=expected // np_dtype.itemsize, offset=begin)
        tensors[name] = torch.from_numpy(array.reshape(shape).copy())
    if covered != len(data):
        raise ValueError(f"{path}: {len(data) - covered} trailing bytes after the last tensor")
    return tensors, metadata
