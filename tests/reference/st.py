"""Minimal safetensors reader/writer for the reference scripts (numpy arrays in, files out), so
the fixtures need no package beyond Debian's python3-numpy and python3-torch."""
import json
import struct

import numpy as np

_NAMES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("uint8"): "U8",
          np.dtype("int32"): "I32", np.dtype("int64"): "I64", np.dtype("float64"): "F64"}
_DTYPES = {v: k for k, v in _NAMES.items()}


def save(path, tensors, metadata=None, keep_float64=False):
    """tensors: {name: numpy array}; float64 arrays are stored as F32 (the C++ side reads f32), or
    as F64 with keep_float64 (for references that need double precision)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype == np.float64 and not keep_float64:
            a = a.astype(np.float32)
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[b:end], dtype=_DTYPES[e["dtype"]]).reshape(e["shape"]).copy()
    return out
