"""Dequantisers for GGML's Q8_0, Q5_0, Q4_K, Q5_K and Q6_K blocks, written from the block structs
and `dequantize_row_*` of ggml (ggml-common.h, ggml-quants.c) in numpy, independent of the
`gguf` package the loader calls, so that the loader's dequantisation is checked against a second
reading of the layouts.

Each function takes the raw bytes of whole blocks (uint8 [..., bytes]) and returns float32
[..., values] in ggml's order, computed in float32 in ggml's order of operations:

- Q8_0 (32 values, 34 bytes): f16 d; int8 qs[32]. x = d * qs.
- Q5_0 (32 values, 22 bytes): f16 d; uint8 qh[4] (the 5th bits, little-endian uint32); uint8
  qs[16] (low nibbles: values 0-15, high nibbles: 16-31). x = d * (q - 16).
- Q4_K (256 values, 144 bytes): f16 d, dmin; uint8 scales[12] (eight 6-bit scales and mins,
  `get_scale_min_k4`); uint8 qs[128]: four 64-value chunks, each 32 bytes whose low nibbles are
  the chunk's first 32 values (sub-block 2j) and high nibbles its last 32 (sub-block 2j + 1).
  x = (d * sc) * q - (dmin * m).
- Q5_K (256 values, 176 bytes): as Q4_K with uint8 qh[32] before qs: value l of sub-block s takes
  bit s of qh[l] as its 5th bit.
- Q6_K (256 values, 210 bytes): uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d. Two halves
  of 128 values; in a half, value l + 32 k (k = 0..3, l = 0..31) is the low or high nibble of
  ql[l] (k = 0, 2) or ql[l + 32] (k = 1, 3) with bits 2k, 2k + 1 of qh[l] on top, minus 32,
  times d * scales[l // 16 + 2 k].
"""

from __future__ import annotations

import numpy as np

QK_K = 256
BLOCKS = {"Q8_0": (32, 34), "Q5_0": (32, 22), "Q4_K": (QK_K, 144), "Q5_K": (QK_K, 176), "Q6_K": (QK_K, 210)}


def _f16(b: np.ndarray) -> np.ndarray:
    """Two bytes (little-endian IEEE half) [..., 2] -> float32 [..., 1]."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def q8_0(b: np.ndarray) -> np.ndarray:
    return _f16(b[..., 0:2]) * b[..., 2:34].view(np.int8).astype(np.float32)


def q5_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b[..., 0:2])
    qh = np.ascontiguousarray(b[..., 2:6]).view("<u4").astype(np.int64)  # [..., 1]
    qs = b[..., 6:22].astype(np.int64)
    j = np.arange(16)
    lo = (qs & 0x0F) | (((qh >> j) << 4) & 0x10)
    hi = (qs >> 4) | ((qh >> (j + 12)) & 0x10)
    return d * (np.concatenate([lo, hi], axis=-1) - 16).astype(np.float32)


def scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's `get_scale_min_k4` for j = 0..7: the 6-bit (scale, min) pairs of 12 packed bytes."""
    q = scales.astype(np.int64)
    sc = np.concatenate([q[..., 0:4] & 63, (q[..., 8:12] & 0x0F) | ((q[..., 0:4] >> 6) << 4)], axis=-1)
    mn = np.concatenate([q[..., 4:8] & 63, (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k4_values(b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K: q [..., 8, 32] (sub-block, value) -> (d * sc) * q - (dmin * m)."""
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = scale_min_k4(b[..., 4:16])
    return ((d * sc)[..., None] * q.astype(np.float32) - (dmin * mn)[..., None]).reshape(*b.shape[:-1], QK_K)


def _nibble_subblocks(qs: np.ndarray) -> np.ndarray:
    """qs [..., 128] -> [..., 8, 32]: chunk j's low nibbles are sub-block 2j, its high ones 2j + 1."""
    chunks = qs.astype(np.int64).reshape(*qs.shape[:-1], 4, 32)
    return np.stack([chunks & 0x0F, chunks >> 4], axis=-2).reshape(*qs.shape[:-1], 8, 32)


def q4_k(b: np.ndarray) -> np.ndarray:
    return _k4_values(b, _nibble_subblocks(b[..., 16:144]))


def q5_k(b: np.ndarray) -> np.ndarray:
    qh = b[..., 16:48].astype(np.int64)  # [..., 32]
    high = np.stack([(qh >> s) & 1 for s in range(8)], axis=-2)  # [..., 8, 32]: bit s of qh[l]
    return _k4_values(b, _nibble_subblocks(b[..., 48:176]) + 16 * high)


def q6_k(b: np.ndarray) -> np.ndarray:
    ql = b[..., 0:128].astype(np.int64).reshape(*b.shape[:-1], 2, 64)
    qh = b[..., 128:192].astype(np.int64).reshape(*b.shape[:-1], 2, 32)
    scales = b[..., 192:208].view(np.int8).astype(np.float32).reshape(*b.shape[:-1], 2, 8)
    d = _f16(b[..., 208:210])[..., None]  # [..., 1, 1]
    low = [ql[..., 0:32] & 0x0F, ql[..., 32:64] & 0x0F, ql[..., 0:32] >> 4, ql[..., 32:64] >> 4]
    q = np.stack([low[k] | (((qh >> (2 * k)) & 3) << 4) for k in range(4)], axis=-2) - 32  # [..., 2, 4, 32]
    sc = np.stack([scales[..., [2 * k, 2 * k + 1]] for k in range(4)], axis=-2)  # [..., 2, 4, 2]
    sc = np.repeat(sc, 16, axis=-1)  # value l of group k takes scales[l // 16 + 2 k]
    return ((d[..., None] * sc) * q.astype(np.float32)).reshape(*b.shape[:-1], QK_K)


DEQUANTIZE = {"Q8_0": q8_0, "Q5_0": q5_0, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}


def dequantize(raw: np.ndarray, kind: str) -> np.ndarray:
    """A tensor's bytes (uint8, any shape whose last axis holds whole blocks of `kind`, or F32/F16
    values) -> float32 [..., values per row]."""
    if kind in ("F32", "F16"):
        return np.asarray(raw, np.float32)
    block, size = BLOCKS[kind]
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    blocks = raw.reshape(*raw.shape[:-1], raw.shape[-1] // size, size)
    return DEQUANTIZE[kind](blocks).reshape(*raw.shape[:-1], -1)
