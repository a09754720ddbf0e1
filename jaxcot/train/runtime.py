"""The trainer runtime the SFT (`jaxcot.train.loop`) and GRPO (`jaxcot.rl.loop`) trainers share.

Both hold the same kind of run: local folders for remote outputs and a lock on the output folder,
a (data, fsdp, tensor) mesh, a model with LoRA attached or not, its trainable parameters and AdamW
state placed in their shards, Orbax checkpoints that a rerun of the same command resumes from
(after checking it has the same settings), metrics.jsonl and TensorBoard written by process 0, a
SIGTERM answered by a checkpoint, and an export at the end. What differs is one step (a batch of
examples; a batch of rollouts and its updates) and what a checkpoint's metadata holds: each
trainer supplies those, and this module is the one copy of the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
from typing import Any, Callable, Iterator, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot import distributed, storage
from jaxcot.config import MeshConfig, to_dict
from jaxcot.io import output_lock
from jaxcot.sharding import batch_shards, config_mesh
from jaxcot.train.checkpoint import Checkpointer, ResumeRefused, latest_meta
from jaxcot.train.config import CheckpointConfig, LogConfig, LoraConfig, OptimConfig
from jaxcot.train.lora import apply_lora
from jaxcot.train.step import StepShardings, make_optimizer, split_model, step_shardings

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm; the message names the step and the kept checkpoint."""


class TrainerConfig(Protocol):
    """The settings every trainer's config has (`TrainConfig`, `GRPOConfig`), all this runtime reads."""

    output_dir: str
    method: str
    lora: LoraConfig
    optim: OptimConfig
    mesh: MeshConfig
    checkpoint: CheckpointConfig
    log: LogConfig
    distributed: Any
    seed: int
    param_dtype: str
    progress: bool


# -- folders ------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_run(config, doing: str, **folders: str | None) -> Iterator[tuple[Any, Callable[[], None] | None]]:
    """Yields (config with `folders` -- {field: path or None} -- replaced by local ones, a function
    pushing the remote ones now or None), the output folder locked by process 0 meanwhile.

    Joins `config.distributed`'s job first. Remote folders (gs://...) are mirrored through one host's
    disk, so several processes refuse them; `doing` ('train', 'run GRPO') says what in that message.
    """
    distributed.initialize(config.distributed)  # before asking which process this is
    if jax.process_count() > 1 and any(p and storage.is_remote(p) for p in folders.values()):
        raise ValueError("remote output folders (gs://...) are mirrored through one host's disk: "
                         f"{doing} on several hosts into a folder every host sees")
    with storage.local_folders(list(folders.values())) as (paths, push):
        local = dataclasses.replace(config, **dict(zip(folders, paths)))
        with output_lock(local.output_dir) if jax.process_index() == 0 else contextlib.nullcontext():
            yield local, push


def output_folder(config: TrainerConfig) -> str:
    """`config.output_dir` as an absolute path, created if missing."""
    out_dir = os.path.abspath(config.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    return out_dir


def checkpoint_dir(out_dir: str) -> str:
    """Where a run in `out_dir` keeps its checkpoints."""
    return os.path.join(out_dir, "checkpoints")


def save_config(out_dir: str, config: TrainerConfig, lead: bool) -> None:
    """config.json in `out_dir`: the run's settings, written by process 0 (`lead`)."""
    if lead:
        with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(to_dict(config), f, indent=2)


# -- mesh and placement -------------------------------------------------------------------------


def trainer_mesh(mc: MeshConfig):
    """The (data, fsdp, tensor) mesh a trainer's updates run on: every process's devices, or a
    single process's first `mc.devices`."""
    if mc.devices and jax.process_count() > 1:
        raise ValueError("mesh.devices (a device subset) is for single-process runs")
    return config_mesh(mc)


def check_micro_batch(mesh, micro: int, what: str) -> None:
    """Raise unless a micro-batch of `micro` rows splits evenly over the mesh's batch shards;
    `what` names the micro-batch (and where its size comes from) in the message."""
    shards = batch_shards(mesh)
    if micro % shards:
        raise ValueError(f"{what} must be a multiple of data x fsdp = {shards}")


def place(tree, shardings):
    """Every leaf onto its sharding (a global array, also across processes)."""

    def put(x, s):
        if isinstance(x, jax.Array) and x.sharding == s:  # (an equivalent SingleDeviceSharding would recompile)
            return x
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            data = put(jax.random.key_data(x), jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec()))
            return jax.random.wrap_key_data(data, impl=impl)
        if jax.process_count() == 1:
            return jax.device_put(x, s)
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    return jax.tree.map(put, tree, shardings)


def gather_to_host(tree):
    """Numeric leaves as host numpy arrays (all-gathered across processes); keys unchanged."""
    from jax.experimental import multihost_utils

    def get(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        if jax.process_count() == 1 or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


# -- the model and its optimizer ----------------------------------------------------------------


def attach_lora(model: nnx.Module, config: TrainerConfig) -> nnx.Module:
    """`model` with LoRA factors on `config.lora.targets` (in place) when `config.method` is
    'lora', seeded by `config.seed + 1` so the factors draw apart from a random init's stream."""
    if config.method == "lora":
        lc = config.lora
        apply_lora(model, rank=lc.rank, alpha=lc.alpha, dropout=lc.dropout, targets=tuple(lc.targets),
                   seed=config.seed + 1, param_dtype=DTYPES[config.param_dtype])
    return model


@dataclasses.dataclass
class TrainState:
    """A model split for its train step. graphdef: its structure; params: the trainable leaves
    (LoRA factors, or every weight for 'full'); frozen: the rest; opt_state: AdamW's; each placed
    by `shardings`. tx / schedule: the optimizer and its learning rate by update."""

    graphdef: Any
    params: Any
    frozen: Any
    opt_state: Any
    shardings: StepShardings
    tx: Any
    schedule: Callable

    def model(self) -> nnx.Module:
        """The model with the current parameters (LoRA attached, not merged)."""
        return nnx.merge(self.graphdef, self.params, self.frozen)

    def trainable(self) -> int:
        """How many numbers the optimizer updates."""
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))


def init_state(model: nnx.Module, config: TrainerConfig, mesh, updates: int) -> TrainState:
    """`model` split by `config.method`, placed on `mesh`, with the optimizer of `config.optim`
    over `updates` updates and its fresh state."""
    graphdef, params, frozen = split_model(model, config.method)
    del model
    tx, schedule = make_optimizer(config.optim, updates)
    sh = step_shardings(mesh, params, frozen, jax.eval_shape(tx.init, params))
    params, frozen = place(params, sh.params), place(frozen, sh.frozen)
    opt_state = jax.jit(tx.init, out_shardings=sh.opt_state)(params)
    return TrainState(graphdef, params, frozen, opt_state, sh, tx, schedule)


# -- the resume guard ---------------------------------------------------------------------------


def _comparable(config_dict: dict, keys: Sequence[str]) -> dict:
    return {k: v for k, v in json.loads(json.dumps(config_dict)).items() if k not in keys}


def resume_differences(saved: dict, config, keys: Sequence[str], data_digest: str | None = None) -> list[str]:
    """The settings (and the data, where `data_digest` is given) in which the checkpointed run
    whose metadata is `saved` differs from `config`; `keys`: the fields a resumed run may change
    (the config module's `RESUMABLE_KEYS`)."""
    a, b = _comparable(saved["config"], keys), _comparable(to_dict(config), keys)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if data_digest is not None and saved.get("data_digest") not in (None, data_digest):
        diff.append("the training data's contents")
    return diff


def check_resumable(saved: dict, config, keys: Sequence[str], where: str, data_digest: str | None = None) -> None:
    """Raise, naming `where` and the differences, unless `resume_differences` finds none."""
    diff = resume_differences(saved, config, keys, data_digest)
    if diff:
        raise ResumeRefused(
            f"{where}: the checkpointed run differs in {', '.join(diff)}; resuming would not reproduce it. "
            "Use a new output_dir or checkpoint.resume=false."
        )


def checkpoint_matches(config: TrainerConfig, keys: Sequence[str],
                       data_digest: Callable[[], str | None] = lambda: None) -> bool:
    """Whether `config.output_dir` holds no checkpoint, or one a run of `config` would resume
    exactly; `data_digest()` (asked only when there is a checkpoint): the data's digest, or None."""
    meta = latest_meta(checkpoint_dir(config.output_dir))
    return meta is None or not resume_differences(meta, config, keys, data_digest())


def open_checkpoints(out_dir: str, cc: CheckpointConfig) -> Checkpointer | None:
    """The checkpointer over `checkpoint_dir(out_dir)`; None when `cc` turns checkpoints off."""
    if not cc.enabled:
        return None
    return Checkpointer(checkpoint_dir(out_dir), keep=cc.keep, async_save=cc.async_save)


def resume(state: TrainState, ckpt: Checkpointer | None, config: TrainerConfig, keys: Sequence[str], *,
           iterator, data_digest: str | None = None, say: Callable[[str], None]) -> int:
    """The step the run starts after: 0 when there is nothing to resume (no checkpoint saved,
    checkpoints off, or `checkpoint.resume` false); else the newest readable checkpoint's (a
    damaged one is moved aside, saying so: `Checkpointer.restore_latest`), whose params and
    optimizer state replace `state`'s and whose data position `iterator` takes, once
    `check_resumable` found it a run of this config."""
    if ckpt is None or not config.checkpoint.resume:
        return 0
    sh = state.shardings
    got = ckpt.restore_latest(
        check=lambda meta: check_resumable(meta, config, keys, ckpt.directory, data_digest), say=say,
        params=state.params, opt_state=state.opt_state, shardings_params=sh.params, shardings_opt=sh.opt_state,
        iterator=iterator,
    )
    if got is None:
        return 0
    state.params, state.opt_state, meta = got
    start = int(meta["step"])
    say(f"resumed from {ckpt.directory} at step {start}")
    return start


# -- driving the steps --------------------------------------------------------------------------


class MetricsLog:
    """metrics.jsonl under the output folder (process 0 only); on resume, lines past the resumed
    step are dropped so the log reads as one run."""

    def __init__(self, path: str, start_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        self._f = None
        if not enabled:
            return
        kept = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    if rec.get("step", 0) <= start_step:
                        kept.append(json.dumps(rec) + "\n")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict) -> None:
        if self._f is not None:
            self._f.write(json.dumps(rec) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


class Preemption:
    """SIGTERM sets a flag the loop checks after each step (main thread only)."""

    def __init__(self, install: bool):
        self.flag = False
        self._old = None
        self._installed = install and threading.current_thread() is threading.main_thread()
        if self._installed:
            self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.flag = True

    def requested(self) -> bool:
        """The flag, agreed across processes (any process preempted -> all stop)."""
        if jax.process_count() == 1:
            return self.flag
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray([self.flag]))))

    def restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._old)


@dataclasses.dataclass
class Progress:
    """How a run reports its steps: `desc` names its progress bar; each record written goes to
    metrics.jsonl, and its `scalars` to TensorBoard as '<tag>/<key>'."""

    desc: str
    tag: str
    scalars: tuple[str, ...]


class StepDriver:
    """Drives a run's steps `start`+1 .. `total` (a context manager; leaving it closes the bar,
    the logs and the checkpointer, which finishes asynchronous saves, and restores SIGTERM).

    `run(step, save)` calls step(i) for the 0-based step i, saves after every
    `checkpoint.every`-th step and the last, and stops early, saved, on SIGTERM (any process's:
    status 'preempted') or once `stop_after` steps are done ('stopped'). `write(rec)` logs one
    step's metrics record (its 'step' is the 1-based step). Process 0 (`lead`) alone writes the
    logs and shows the bar. `push` (remote output folders) runs after each save, once it is on disk.
    """

    def __init__(self, config: TrainerConfig, report: Progress, *, out_dir: str, start: int, total: int, lead: bool,
                 ckpt: Checkpointer | None, handle_sigterm: bool, say: Callable[[str], None],
                 push: Callable[[], None] | None = None):
        from jaxcot.logs import progress, tensorboard_writer

        self.start, self.total, self.every = start, total, config.checkpoint.every
        self.report, self.ckpt, self.say, self.push = report, ckpt, say, push
        self.log = MetricsLog(os.path.join(out_dir, "metrics.jsonl"), start, lead)
        self.tb = (tensorboard_writer(os.path.join(out_dir, "tensorboard"), purge_step=start + 1)
                   if lead and config.log.tensorboard else None)
        self.preempt = Preemption(handle_sigterm)
        self.bar = progress(total, initial=start, desc=report.desc, unit="step", enabled=lead and config.progress)

    def __enter__(self) -> StepDriver:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.log.close()
        self.preempt.restore()
        if self.tb is not None:
            self.tb.close()
        if self.ckpt is not None:
            self.ckpt.close()  # finishes async saves before returning (or raising)

    def write(self, rec: dict) -> None:
        """One step's metrics record to metrics.jsonl and its scalars to TensorBoard."""
        self.log.write(rec)
        if self.tb is not None:
            for k in self.report.scalars:
                self.tb.add_scalar(f"{self.report.tag}/{k}", rec[k], rec["step"])

    def flush(self) -> None:
        """TensorBoard's events onto disk now."""
        if self.tb is not None:
            self.tb.flush()

    def _save(self, save: Callable[[int], None], step: int) -> None:
        save(step)
        if self.push is not None:  # remote folders: the checkpoint leaves this machine before the run goes on
            if self.ckpt is not None:
                self.ckpt.wait()
            self.push()

    def run(self, step: Callable[[int], None], save: Callable[[int], None], stop_after: int | None = None
            ) -> tuple[str, int]:
        """(status: 'finished', 'preempted' or 'stopped', the steps done) after driving the steps;
        save(n) checkpoints the state after n steps."""
        n = self.start
        while n < self.total:
            step(n)
            n += 1
            self.bar.update(1)
            if n % self.every == 0 or n == self.total:
                self._save(save, n)
            if n < self.total and self.preempt.requested():
                self._save(save, n)
                self.say(f"SIGTERM: saved step {n} to {self.ckpt.directory}; rerun the same command to resume"
                         if self.ckpt is not None else f"SIGTERM: stopped at step {n} (checkpoints disabled)")
                return "preempted", n
            if stop_after is not None and n >= stop_after and n < self.total:
                self._save(save, n)
                return "stopped", n
        return "finished", n


# -- export -------------------------------------------------------------------------------------


def _export_with(save: Callable[[nnx.Module], Any], model: nnx.Module, path: str, barrier: str) -> str:
    """Gather the model to every host, let process 0 `save` it, then meet at a barrier."""
    graphdef, state = nnx.split(model)
    host = gather_to_host(state.to_pure_dict())
    if jax.process_index() == 0:
        save(nnx.merge(graphdef, host))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(barrier)
    return os.path.abspath(path)


def export(model: nnx.Module, path: str, tokenizer=None, *, dtype=jnp.float32) -> str:
    """Save the model (LoRA merged) as a HF folder; process 0 writes, all processes gather."""
    from jaxcot.models.params import save_hf

    return _export_with(lambda m: save_hf(m, path, tokenizer=tokenizer, dtype=dtype), model, path, "jaxcot-export")


def export_adapter(model: nnx.Module, path: str, tokenizer=None, *, dtype=jnp.float32, base_model: str | None = None
                   ) -> str:
    """Save the model's LoRA factors as a PEFT adapter folder (see `jaxcot.models.adapters`)."""
    from jaxcot.models.adapters import save_peft_adapter

    base = os.path.abspath(base_model) if base_model and os.path.exists(base_model) else base_model
    return _export_with(lambda m: save_peft_adapter(m, path, base_model=base, dtype=dtype, tokenizer=tokenizer),
                        model, path, "jaxcot-export-adapter")


__all__ = [
    "DTYPES", "MetricsLog", "Preemption", "Progress", "StepDriver", "TrainState", "TrainerConfig", "TrainingDiverged",
    "attach_lora", "check_micro_batch", "check_resumable", "checkpoint_dir", "checkpoint_matches", "export",
    "export_adapter", "gather_to_host", "init_state", "local_run", "open_checkpoints", "output_folder", "place",
    "resume", "resume_differences", "save_config", "trainer_mesh",
]
