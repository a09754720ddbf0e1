"""Length-bucketed, data-parallel batches of encoded traces for `gogi_scores`.

Sequences are right-padded to a power-of-two length (at least `min_len`), so a dataset compiles
a handful of programs; every batch has the same row count (the batch size rounded up to the
mesh's data-parallel size), short batches are filled with empty rows, and the arrays are placed
with the batch axis sharded over the mesh's ``data`` x ``fsdp`` axes.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxcot.importance.encode import EncodedTrace
from jaxcot.sharding import BATCH, batch_sharding, make_mesh


def bucket_length(n: int, min_len: int = 16) -> int:
    """The smallest power of two >= max(n, min_len)."""
    n = max(int(n), int(min_len), 1)
    return 1 << (n - 1).bit_length()


def model_mesh(model) -> Mesh:
    """The mesh the model's parameters live on (a one-device mesh for unsharded parameters)."""
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    sharding = leaves[0].sharding if leaves and hasattr(leaves[0], "sharding") else None
    if isinstance(sharding, NamedSharding):
        return sharding.mesh
    devices = sorted(sharding.device_set, key=lambda d: d.id) if sharding is not None else jax.devices()[:1]
    return make_mesh(devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH]))


@dataclasses.dataclass(frozen=True)
class Batch:
    """Host arrays for one step: tokens [R, T] int32, mask / chain_mask / answer_mask [R, T]
    bool, and `index`: the trace index of each real row (rows beyond len(index) are filler)."""

    tokens: np.ndarray
    mask: np.ndarray
    chain_mask: np.ndarray
    answer_mask: np.ndarray
    index: tuple[int, ...]
    max_answer: int

    def on(self, mesh: Mesh) -> dict[str, jax.Array]:
        """The arrays placed on `mesh`, batch axis sharded over data x fsdp."""
        sh = batch_sharding(mesh, 2)
        return {k: jax.device_put(getattr(self, k), sh) for k in ("tokens", "mask", "chain_mask", "answer_mask")}


def make_batch(encoded: Sequence[EncodedTrace], index: Sequence[int], rows: int, length: int,
               min_answer: int = 8) -> Batch:
    """Right-pad traces `encoded[i] for i in index` into [rows, length] arrays."""
    tokens = np.zeros((rows, length), np.int32)
    mask = np.zeros((rows, length), bool)
    chain = np.zeros((rows, length), bool)
    answer = np.zeros((rows, length), bool)
    for r, i in enumerate(index):
        e = encoded[i]
        n = e.length
        tokens[r, :n] = e.token_ids
        mask[r, :n] = True
        cm, am = e.masks()
        chain[r, :n], answer[r, :n] = cm, am
    n_ans = int(answer.sum(1).max(initial=0))
    return Batch(tokens, mask, chain, answer, tuple(index), min(length, bucket_length(n_ans, min_answer)))


def plan_batches(lengths: Sequence[int], batch_size: int, dp: int = 1,
                 min_len: int = 16) -> list[tuple[int, list[int]]]:
    """Group trace indices into (bucket length, indices) batches of at most `rows` traces, rows =
    batch_size rounded up to a multiple of `dp`; longest buckets first (memory errors show early)."""
    rows = -(-max(1, int(batch_size)) // dp) * dp
    buckets: dict[int, list[int]] = {}
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        buckets.setdefault(bucket_length(lengths[i], min_len), []).append(i)
    plan = []
    for length in sorted(buckets, reverse=True):
        idx = buckets[length]
        plan += [(length, idx[k:k + rows]) for k in range(0, len(idx), rows)]
    return plan


def iter_batches(encoded: Sequence[EncodedTrace], batch_size: int, mesh: Mesh, min_len: int = 16) -> Iterator[Batch]:
    """Batches covering every trace once, in `plan_batches` order."""
    dp = data_parallel_size(mesh)
    rows = -(-max(1, int(batch_size)) // dp) * dp
    for length, idx in plan_batches([e.length for e in encoded], batch_size, dp, min_len):
        yield make_batch(encoded, idx, rows, length)


__all__ = ["Batch", "bucket_length", "data_parallel_size", "iter_batches", "make_batch", "model_mesh", "plan_batches"]
