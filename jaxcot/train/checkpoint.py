"""Orbax checkpoints of a training run: params (or adapters), optimizer state, the grain
iterator state and a JSON record (step, resolved config, data stats).

Step k's checkpoint holds the state after k optimizer steps, and the iterator positioned at
batch k, so resuming from it replays exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

ITEMS = ("params", "opt_state", "data", "meta")


class _IteratorSnapshot:
    """An iterator state frozen at save time (saves may finish after the iterator moved on).

    grain's handler writes `get_state()` bytes as-is for non-`DatasetIterator` items.
    """

    def __init__(self, state: dict):
        self._state = json.dumps(state, indent=4).encode()

    def get_state(self) -> bytes:
        return self._state


def abstract_like(tree, shardings):
    """ShapeDtypeStructs (with shardings) for restoring into `tree`'s structure."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpointer:
    """A `CheckpointManager` over `<directory>`, keeping the last `keep` steps.

    Saves are asynchronous when `async_save`; `wait()` blocks until they are on disk.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, *, params, opt_state, data_state: dict, meta: dict) -> bool:
        """Start saving step `step` (no-op if it exists); returns whether a save started."""
        if step in self.manager.all_steps():
            return False
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            data=grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_state)),
            meta=ocp.args.JsonSave(meta),
        )
        return bool(self.manager.save(step, args=args, force=True))

    def read_meta(self, step: int) -> dict:
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(self, step: int, *, params, opt_state, shardings_params, shardings_opt,
                iterator) -> tuple[Any, Any, dict]:
        """(params, opt_state, meta) of step `step`, placed by the given shardings; `iterator`
        (a grain DatasetIterator) is set to the saved position."""
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_like(params, shardings_params)),
                opt_state=ocp.args.StandardRestore(abstract_like(opt_state, shardings_opt)),
                data=grain.checkpoint.CheckpointRestore(iterator),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return out["params"], out["opt_state"], dict(out["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def latest_meta(directory: str | os.PathLike) -> dict | None:
    """The JSON record of the last checkpoint under `directory`, or None when there is none."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        return None
    ckpt = Checkpointer(directory, keep=1, async_save=False)
    try:
        latest = ckpt.latest_step()
        return None if latest is None else ckpt.read_meta(latest)
    finally:
        ckpt.close()


__all__ = ["Checkpointer", "ITEMS", "abstract_like", "latest_meta"]
