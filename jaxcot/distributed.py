"""Several processes, one job: `jax.distributed`, each process's share of a stage's work, and the
files the shares write.

A multi-host `jaxcot run` (docs/running.md, "Where our users run") splits its data-parallel stages by
batch: the stage plans its batches over the whole input exactly as one process would, and process
i of n takes batches i, i+n, i+2n, ... (`Share.take`), so every batch is the one a single process
would have run, and its rows come out the same. Each share is written to its own part file beside
the output (`part_path`); when every process has finished, process 0 gathers the parts into the
output, in the order one process writes it (`gather_parts`), while the others wait at a barrier
(`barrier`). The run folder must be storage every host sees (a shared file system, gcsfuse);
`agree` checks that the processes see the same thing.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Sequence, TypeVar

from jaxcot.config import check
from jaxcot.io import DataError, ResumableJsonl, is_complete, read_jsonl
from jaxcot.provenance import discard

T = TypeVar("T")


@dataclasses.dataclass
class DistributedConfig:
    """Multi-host start (`jax.distributed.initialize`); all None: single host, or the
    platform's auto-detection (TPU pods, SLURM) when `enabled` is true."""

    enabled: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def __post_init__(self):
        check(self.num_processes is None or self.num_processes >= 1, "num_processes",
              f"must be >= 1, got {self.num_processes}")
        check(self.process_id is None or self.process_id >= 0, "process_id", f"must be >= 0, got {self.process_id}")


def initialize(dc: DistributedConfig) -> None:
    """`jax.distributed.initialize` when `dc.enabled` (a no-op otherwise, or when already done).
    Call it before anything asks JAX for its devices."""
    import jax

    if not dc.enabled or jax.distributed.is_initialized():
        return
    # CPU collectives across processes go through gloo; the setting does not touch accelerators.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=dc.coordinator, num_processes=dc.num_processes,
                               process_id=dc.process_id)


@dataclasses.dataclass(frozen=True)
class Share:
    """Process `index` of `count`: which batches of a stage are its own."""

    index: int = 0
    count: int = 1

    @classmethod
    def of_this_process(cls) -> "Share":
        """This process's share: the whole for a job of one process (without starting JAX's
        backend to ask)."""
        import jax

        if not jax.distributed.is_initialized():
            return cls()
        return cls(jax.process_index(), jax.process_count())

    @property
    def lead(self) -> bool:
        return self.index == 0

    def take(self, batches: Sequence[T]) -> list[T]:
        """This process's batches: index, index + count, ... (batches alternate between processes,
        so long and short ones spread evenly when the batches are sorted by length)."""
        return list(batches[self.index::self.count])

    def suffix(self) -> str:
        return f".part-{self.index}-of-{self.count}"


def part_path(out: str, share: Share) -> str:
    """Where `share` writes its part of the output `out` (out itself for a single process)."""
    return out if share.count == 1 else out + share.suffix()


def gather_parts(out: str, ids: Sequence, count: int, *, key: str = "id") -> int:
    """Write the records of `out`'s `count` finished part files to `out` in the order of `ids`
    (every id the output must hold, in the input's order: as one process writes it), then delete
    the parts (and any left by a launch with another process count); returns the record count."""
    paths = [part_path(out, Share(i, count)) for i in range(count)]
    missing = [p for p in paths if not is_complete(p)]
    if missing:
        raise DataError(f"{out}: part {missing[0]} is not finished; every process must finish its share first")
    merged = [rec for p in paths for rec in read_jsonl(p, required=(key,))]
    seen, expected = set(), set(ids)
    for rec in merged:
        if rec[key] in seen:
            raise DataError(f"{out}: id {rec[key]!r} is in two parts")
        if rec[key] not in expected:
            raise DataError(f"{out}: the parts hold id {rec[key]!r}, which is not in the input")
        seen.add(rec[key])
    if len(seen) != len(expected):
        absent = next(i for i in ids if i not in seen)
        raise DataError(f"{out}: no part holds id {absent!r}")
    with ResumableJsonl(out, ids=list(ids), key=key) as writer:
        pending = set(writer.pending)
        for rec in merged:
            if rec[key] in pending:
                writer.write(rec)
    for p in paths:
        discard(p)
    for p in glob.glob(glob.escape(out) + ".part-*"):  # parts of an earlier launch with another process count
        os.remove(p)
    return len(merged)


def barrier(name: str, timeout_s: int = 24 * 3600) -> None:
    """Wait until every process of the job reaches the barrier `name` (a no-op for one process).
    Uses the coordination service, so a process may wait for hours without a device collective
    pending."""
    import jax

    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # started some other way: a device collective does the same
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))


def agree(value: bool, what: str) -> bool:
    """`value` as every process computed it; an error when they differ (the processes see
    different files: the run folder is not on storage all hosts share)."""
    import jax

    if jax.process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    seen = np.asarray(multihost_utils.process_allgather(np.asarray([bool(value)])))
    if seen.min() != seen.max():
        raise RuntimeError(f"{what}: processes disagree ({seen.ravel().tolist()}): the run folder must be storage "
                           f"every host sees (a shared file system or gcsfuse)")
    return bool(seen.ravel()[0])


__all__ = ["DistributedConfig", "Share", "agree", "barrier", "gather_parts", "initialize", "part_path"]
