"""Length-bucketed, data-parallel batches of encoded traces for `gogi_scores`.

Traces are taken longest first, consecutive ones forming a batch, so rows of a batch have
similar lengths; each batch is right-padded to the grid length (`jaxcot.shapes`, `steps` per
octave, at least `min_len`) of its longest row, so a dataset compiles a handful of programs.
Every batch has the same row count (the batch size rounded up to the mesh's data-parallel size);
the last one is filled with empty rows. The arrays are placed with the batch axis sharded over
the mesh's ``data`` x ``fsdp`` axes.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxcot.importance.encode import EncodedTrace
from jaxcot.shapes import bucket_length, length_sorted_batches
from jaxcot.sharding import batch_sharding, batch_shards, make_mesh


def model_mesh(model) -> Mesh:
    """The mesh the model's parameters live on (a one-device mesh for unsharded parameters)."""
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    sharding = leaves[0].sharding if leaves and hasattr(leaves[0], "sharding") else None
    if isinstance(sharding, NamedSharding):
        return sharding.mesh
    devices = sorted(sharding.device_set, key=lambda d: d.id) if sharding is not None else jax.local_devices()[:1]
    return make_mesh(devices=devices)


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


def batch_rows(batch_size: int, dp: int = 1) -> int:
    """Rows per batch: `batch_size` rounded up to a multiple of the data-parallel size `dp`."""
    return -(-max(1, int(batch_size)) // dp) * dp


def plan_batches(lengths: Sequence[int], batch_size: int, dp: int = 1, min_len: int = 16,
                 steps: int = 4) -> list[tuple[int, list[int]]]:
    """(padded length, trace indices) batches of at most `rows` traces (batch_size rounded up to
    a multiple of `dp`): traces longest first (memory errors show early), consecutive ones
    together, each batch padded to the grid length of its longest trace."""
    groups = length_sorted_batches(lengths, batch_rows(batch_size, dp), descending=True)
    return [(bucket_length(lengths[g[0]], min_len, steps), g.tolist()) for g in groups]


def iter_batches(encoded: Sequence[EncodedTrace], batch_size: int, mesh: Mesh, min_len: int = 16,
                 steps: int = 4) -> Iterator[Batch]:
    """Batches covering every trace once, in `plan_batches` order."""
    dp = batch_shards(mesh)
    rows = batch_rows(batch_size, dp)
    for length, idx in plan_batches([e.length for e in encoded], batch_size, dp, min_len, steps):
        yield make_batch(encoded, idx, rows, length)


__all__ = ["Batch", "batch_rows", "iter_batches", "make_batch", "model_mesh", "plan_batches"]
