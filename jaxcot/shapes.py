"""Padded lengths: the few static shapes a stage compiles for.

Every compiled program has static shapes, so variable-length rows are padded up to a length from
a fixed grid, and a stage compiles once per grid length it meets (kept in the persistent
compilation cache between runs). The grid's `steps` lengths per octave trade padding against
programs: steps=1 gives powers of two (up to half of a bucket is padding), steps=2 gives 16, 24,
32, 48, ... (at most a third), steps=4 gives 16, 20, 24, 28, 32, 40, ... (at most a fifth).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Sequence

import numpy as np


def _check_steps(steps: int) -> None:
    if steps < 1 or steps & (steps - 1):
        raise ValueError(f"bucket steps per octave must be a power of two >= 1, got {steps}")


def bucket_length(n: int, minimum: int = 16, steps: int = 1) -> int:
    """The smallest grid length >= max(n, minimum, 1): within each octave (2^(k-1), 2^k] the
    grid holds the `steps` lengths 2^(k-1) * (1 + j / steps), j = 1..steps (a power of two).

    Examples: steps=1 -> 16, 32, 64, ...; steps=2 -> 16, 24, 32, 48, 64, 96, ...
    """
    _check_steps(steps)
    n = max(int(n), int(minimum), 1)
    power = 1 << (n - 1).bit_length()
    grain = max(1, power // (2 * steps))
    return -(-n // grain) * grain


def bucket_grid(max_len: int, minimum: int = 16, steps: int = 1) -> tuple[int, ...]:
    """Every grid length of `bucket_length` from `minimum` up to max_len, then max_len itself
    (the last bucket is never longer than the longest row allowed)."""
    out, n = [], bucket_length(minimum, minimum, steps)
    while n < max_len:
        out.append(n)
        n = bucket_length(n + 1, minimum, steps)
    return tuple(out) + (int(max_len),)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, *, descending: bool = False) -> Iterator[np.ndarray]:
    """Batches of row indices with similar lengths, so that each pads little: the indices
    0..N-1 stably sorted by lengths [N] (ascending, or with `descending` longest first; equal
    lengths keep their input order either way), cut into consecutive chunks of `batch_size`
    (the last may be shorter). Yields int64 index arrays. Ascending, a set of whole batches
    given again forms the same batches (a multi-process share of a stage relies on it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = np.asarray(lengths)
    order = np.argsort(-keys if descending else keys, kind="stable")
    for lo in range(0, len(order), batch_size):
        yield order[lo:lo + batch_size]


def merge_lengths(lengths: Sequence[int], groups: int) -> dict[int, int]:
    """At most `groups` shared lengths for a set of padded lengths, with the least padding.

    lengths [N]: one entry per batch (a value met k times weighs k). Each distinct value maps to
    itself or to a larger one of them (consecutive values merge upwards, the largest stays), the
    merge that minimises the sum over the N entries of the length each pads to. Returns {value:
    shared length}, the identity when there are at most `groups` distinct values. A compiled
    program serves one length, so this trades padding for programs at a fixed program count.
    """
    distinct = sorted(set(int(n) for n in lengths))
    groups = max(1, int(groups))
    if len(distinct) <= groups:
        return {n: n for n in distinct}
    seen = Counter(int(n) for n in lengths)
    count = [seen[n] for n in distinct]
    # best[k][j]: least padding for the first j values in k lengths (each run takes its last value)
    inf = float("inf")
    best = [[0.0] + [inf] * len(distinct)] + [[inf] * (len(distinct) + 1) for _ in range(groups)]
    cut = [[0] * (len(distinct) + 1) for _ in range(groups + 1)]
    for k in range(1, groups + 1):
        for j in range(1, len(distinct) + 1):
            for i in range(j):
                cost = best[k - 1][i] + sum(count[i:j]) * distinct[j - 1]
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    shared, j, k = {}, len(distinct), groups  # one more length never pads more: take the last row
    while j:
        i = cut[k][j]
        shared.update({n: distinct[j - 1] for n in distinct[i:j]})
        j, k = i, k - 1
    return shared


def pad_rows(rows: Sequence[np.ndarray], shape: tuple[int, int], dtype, fill=0) -> np.ndarray:
    """Rows of different lengths right-padded with `fill` into one [B, C] array (`shape`); rows
    beyond len(rows) are all `fill`."""
    out = np.full(shape, fill, dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


__all__ = ["bucket_grid", "bucket_length", "length_sorted_batches", "merge_lengths", "pad_rows"]
