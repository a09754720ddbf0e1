"""Orbax checkpoints of a training run: params (or adapters), optimizer state, the grain
iterator state and a JSON record (step, resolved config, data stats).

Step k's checkpoint holds the state after k optimizer steps, and the iterator positioned at
batch k, so resuming from it replays exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp

ITEMS = ("params", "opt_state", "data", "meta")


class CheckpointMismatch(ValueError):
    """A checkpoint saved from a model of other shapes than the one restoring it."""


class ResumeRefused(ValueError):
    """A checkpoint of another run (other settings or data): `restore_latest`'s `check` raises it."""


def _shapes(tree) -> dict[str, tuple]:
    """{'a/b/c': shape} of a tree's arrays (or orbax's array metadata)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = getattr(leaf, "shape", None)
        if shape is not None:
            name = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
            out[name] = tuple(shape)
    return out


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
        (a grain DatasetIterator) is set to the saved position. A step saved from a model of other
        shapes raises `CheckpointMismatch` naming the folder and the first differing array."""
        try:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_like(params, shardings_params)),
                    opt_state=ocp.args.StandardRestore(abstract_like(opt_state, shardings_opt)),
                    data=grain.checkpoint.CheckpointRestore(iterator),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception:
            why = self._mismatch(step, params)
            if why:
                raise CheckpointMismatch(f"{self.directory}: step {step} was saved from another model ({why}); "
                                         "use a new output_dir, or checkpoint.resume=false to start over") from None
            raise
        return out["params"], out["opt_state"], dict(out["meta"])

    def _mismatch(self, step: int, params) -> str | None:
        """How step `step`'s saved parameters differ in shape from `params`, or None (the same,
        or the saved shapes cannot be read)."""
        try:
            saved = ocp.StandardCheckpointer().metadata(os.path.join(self.directory, str(step), "params"))
            saved = getattr(saved, "item_metadata", saved)
        except Exception:  # noqa: BLE001 (unreadable shapes: not known to differ)
            return None
        have, want = _shapes(getattr(saved, "tree", saved)), _shapes(params)
        if not have:
            return None
        for name in sorted(set(have) | set(want)):
            if have.get(name) != want.get(name):
                return (f"{name}: {have[name] if name in have else 'absent'} in the checkpoint, "
                        f"{want[name] if name in want else 'absent'} in this model")
        return None

    def restore_latest(self, *, check: Callable[[dict], None] = lambda meta: None,
                       say: Callable[[str], None] = print, **restore_args) -> tuple[Any, Any, dict] | None:
        """`restore` of the newest step that can be read, or None when there is no step. A step
        that cannot be read (a file truncated or missing) is moved aside to `<directory>.broken/`
        (a new save of that step would otherwise be skipped) and the step before it tried, saying
        so; none readable is a one-line ValueError. `check(meta)` vets a step before its arrays are
        read (a checkpoint of another run); its error, and `CheckpointMismatch`, end the search."""
        broken = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                meta = self.read_meta(step)
                check(meta)
                return self.restore(step, **restore_args)
            except (CheckpointMismatch, ResumeRefused):
                raise
            except Exception as e:  # a damaged step: orbax and tensorstore raise many kinds
                why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                aside = self._move_aside(step)
                say(f"{self.directory}: step {step} cannot be read ({why}); moved it to {aside}, "
                    "trying the step before it")
                broken.append(step)
        if broken:
            raise ValueError(f"{self.directory}: no checkpoint can be read (steps {broken} moved to "
                             f"{self.directory}.broken); set checkpoint.resume=false or use a new output_dir")
        return None

    def _move_aside(self, step: int) -> str:
        import shutil

        aside = os.path.join(self.directory + ".broken", str(step))
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        shutil.move(os.path.join(self.directory, str(step)), aside)
        self.manager.reload()
        return aside

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
        for step in sorted(ckpt.all_steps(), reverse=True):  # a step whose record cannot be read: the one before
            try:
                return ckpt.read_meta(step)
            except Exception:  # noqa: S112 (orbax raises many kinds for a damaged step)
                continue
        return None
    finally:
        ckpt.close()


__all__ = ["CheckpointMismatch", "Checkpointer", "ITEMS", "ResumeRefused", "abstract_like", "latest_meta"]
