"""A GGUF file's metadata and tensor table, read directly (the format is a small header, typed
key/value pairs, a tensor table, then aligned tensor data), with the tensor bytes memory-mapped.

The `gguf` package's reader builds a NumPy view per element of every metadata array, which takes
seconds for a 262k-entry vocabulary; reading the same values with `struct` takes a fraction of a
second. Quantized tensors are still dequantized by the `gguf` package.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
from typing import Any

import numpy as np

_MAGIC = b"GGUF"
# GGUF value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array,
# 10 u64, 11 i64, 12 f64
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the table: shape in NumPy order, ggml type, byte offset and length in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int


@dataclasses.dataclass
class GGUFFile:
    path: str
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]

    def raw(self, name: str) -> np.ndarray:
        """A tensor's bytes as the `gguf` package's `dequantize` takes them: float arrays typed and
        shaped, quantized ones as uint8 [..., bytes per row] (memory-mapped, not copied)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        t = self.tensors[name]
        qtype = GGMLQuantizationType(t.ggml_type)
        blob = np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.nbytes,))
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            if qtype == GGMLQuantizationType.BF16:
                return blob.view(np.uint16).reshape(t.shape)
            return blob.view(np.float32 if qtype == GGMLQuantizationType.F32 else np.float16).reshape(t.shape)
        block, size = GGML_QUANT_SIZES[qtype]
        return blob.reshape(*t.shape[:-1], t.shape[-1] // block * size)


def _string(buf, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8:pos + 8 + n]).decode("utf-8", errors="replace"), pos + 8 + n


def _value(buf, pos: int, vtype: int) -> tuple[Any, int]:
    if vtype == _STRING:
        return _string(buf, pos)
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if vtype != _ARRAY:
        raise ValueError(f"unknown metadata value type {vtype} at byte {pos}")
    etype, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if etype == _STRING:
        out = []
        for _ in range(count):
            s, pos = _string(buf, pos)
            out.append(s)
        return out, pos
    if etype in _NUMPY:
        dt = np.dtype(_NUMPY[etype])
        arr = np.frombuffer(buf, dt, count, pos)
        return arr.tolist(), pos + count * dt.itemsize
    out = []
    for _ in range(count):  # arrays of arrays: rare, read one by one
        v, pos = _value(buf, pos, etype)
        out.append(v)
    return out, pos


def _tensor_bytes(shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * size


@functools.lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> GGUFFile:
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(buf[:4]) != _MAGIC:
        raise ValueError("no GGUF magic bytes")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (this reader handles 2 and 3)")
    pos, meta = 24, {}
    for _ in range(n_kv):
        key, pos = _string(buf, pos)
        (vtype,) = struct.unpack_from("<I", buf, pos)
        meta[key], pos = _value(buf, pos + 4, vtype)
    table = []
    for _ in range(n_tensors):
        name, pos = _string(buf, pos)
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        table.append((name, tuple(int(d) for d in reversed(dims)), int(ggml_type), int(offset)))
    align = int(meta.get("general.alignment", 32))
    start = -(-pos // align) * align
    tensors = {name: GGUFTensor(name, shape, t, start + off, _tensor_bytes(shape, t)) for name, shape, t, off in table}
    for t in tensors.values():
        if t.offset + t.nbytes > size:
            raise ValueError(f"tensor {t.name!r} runs past the end of the file (truncated?)")
    return GGUFFile(path, meta, tensors)


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """The file's metadata ({key: Python value}) and tensor table, parsed once per file version
    (cached by path, size and modification time). Raises ValueError for a file that is not GGUF."""
    path = os.path.realpath(os.fspath(path))
    st = os.stat(path)
    return _read(path, st.st_size, st.st_mtime_ns)


__all__ = ["GGUFFile", "GGUFTensor", "read_gguf"]
