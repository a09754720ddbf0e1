"""`train(config)`: the SFT run from examples to a checkpointed, exported model.

Same code on one CPU, 8 simulated devices, or a multi-host pod: each process tokenizes the data,
plans the same global batches, feeds its own rows through grain, and the jitted step runs on the
(data, fsdp, tensor) mesh. Preemption (SIGTERM) saves a checkpoint and returns; a rerun of the
same command resumes exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot import distributed, storage
from jaxcot.config import to_dict
from jaxcot.data.sft import (
    BatchLayout,
    SFTStats,
    batch_pipeline,
    iter_texts,
    load_examples,
    plan_rows,
    run_buckets,
    stats_with_rows,
    tokenize_examples,
)
from jaxcot.io import output_lock
from jaxcot.logs import get_logger
from jaxcot.models.config import ModelConfig
from jaxcot.models.decoder import Decoder, abstract_model
from jaxcot.sharding import make_mesh, tree_shardings
from jaxcot.train.checkpoint import Checkpointer, latest_meta
from jaxcot.train.config import RESUMABLE_KEYS, TrainConfig
from jaxcot.train.lora import apply_lora
from jaxcot.train.step import make_optimizer, make_train_step, split_model, step_shardings

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm; the message names the step and the kept checkpoint."""


@dataclasses.dataclass
class TrainResult:
    """status: 'finished', 'preempted' (SIGTERM) or 'stopped' (stop_after). `model` is the
    trained model (LoRA attached, not merged) on this process; `export_dir` (merged HF folder) and
    `adapter_dir` (PEFT adapter folder) are set when exported."""

    status: str
    step: int
    total_steps: int
    loss: float | None
    stats: SFTStats
    output_dir: str
    checkpoint_dir: str
    export_dir: str | None
    model: Any
    tokenizer: Any
    adapter_dir: str | None = None


# -- setup --------------------------------------------------------------------------------------


def resolve_tokenizer(config: TrainConfig, examples: Sequence):
    from jaxcot.data.wordtok import build_word_tokenizer

    if config.tokenizer == "word":
        return build_word_tokenizer(iter_texts(examples))
    from jaxcot.models.tokenizer import load_tokenizer

    source = config.tokenizer or config.init_from
    if source is None:
        raise ValueError("a model trained from scratch needs `tokenizer` (a path, or 'word')")
    return load_tokenizer(source)


def _vocab_len(tokenizer) -> int:
    return len(tokenizer)


def resolve_model_config(config: TrainConfig, tokenizer) -> ModelConfig:
    """The from-scratch `ModelConfig`: vocab_size 0 -> the tokenizer's size; eos/pad from it."""
    cfg = config.model
    n = _vocab_len(tokenizer)
    if cfg.vocab_size <= 0:
        cfg = cfg.replace(vocab_size=n)
    if n > cfg.vocab_size:
        raise ValueError(f"model.vocab_size {cfg.vocab_size} is smaller than the tokenizer's {n} tokens")
    if cfg.eos_token_id is None and tokenizer.eos_token_id is not None:
        cfg = cfg.replace(eos_token_id=int(tokenizer.eos_token_id))
    if cfg.pad_token_id is None and tokenizer.pad_token_id is not None:
        cfg = cfg.replace(pad_token_id=int(tokenizer.pad_token_id))
    return cfg


def init_sharded(cfg: ModelConfig, seed: int, mesh, *, dtype, param_dtype, cache: dict | None = None) -> Decoder:
    """A random `Decoder` (same values as `init_model(cfg, seed)`) created directly in its shards.

    cache: a dict reused across calls in this process to skip recompiling the same init.
    """
    graphdef, state = nnx.split(abstract_model(cfg, dtype=dtype, param_dtype=param_dtype))
    key = ("init", cfg, seed, mesh, jnp.dtype(dtype).name, jnp.dtype(param_dtype).name)
    make = None if cache is None else cache.get(key)
    if make is None:
        shardings = tree_shardings(state.to_pure_dict(), mesh)

        def init():
            return nnx.state(Decoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=param_dtype)).to_pure_dict()

        make = jax.jit(init, out_shardings=shardings)
        if cache is not None:
            cache[key] = make
    return nnx.merge(graphdef, make())


def build_model(config: TrainConfig, tokenizer, mesh, cache: dict | None = None) -> Decoder:
    """The base model (random from `config.model`, or loaded from `init_from`) with LoRA if asked."""
    dtype, param_dtype = DTYPES[config.compute_dtype], DTYPES[config.param_dtype]
    if config.model is not None:
        model = init_sharded(resolve_model_config(config, tokenizer), config.seed, mesh, dtype=dtype,
                             param_dtype=param_dtype, cache=cache)
    else:
        from jaxcot.models.loading import load_model

        model = load_model(config.init_from, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
        n = _vocab_len(tokenizer)
        if n > model.config.vocab_size:
            raise ValueError(
                f"{config.init_from}: the model's vocab_size {model.config.vocab_size} is smaller than "
                f"the tokenizer's {n} tokens"
            )
    if config.method == "lora":
        lc = config.lora
        apply_lora(model, rank=lc.rank, alpha=lc.alpha, dropout=lc.dropout, targets=tuple(lc.targets),
                   seed=config.seed + 1, param_dtype=param_dtype)
    return model


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


# -- logging ------------------------------------------------------------------------------------


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


def _comparable(config_dict: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(config_dict)).items() if k not in RESUMABLE_KEYS}


def _resume_differences(saved: dict, current: TrainConfig, data_digest: str | None) -> list[str]:
    """The settings (and the data) in which a checkpointed run differs from `current`."""
    a, b = _comparable(saved["config"]), _comparable(to_dict(current))
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if data_digest is not None and saved.get("data_digest") not in (None, data_digest):
        diff.append("the training data's contents")
    return diff


def _check_resumable(saved: dict, current: TrainConfig, where: str, data_digest: str | None) -> None:
    diff = _resume_differences(saved, current, data_digest)
    if diff:
        raise ValueError(
            f"{where}: the checkpointed run differs in {', '.join(diff)}; resuming would not reproduce it. "
            "Use a new output_dir or checkpoint.resume=false."
        )


def checkpoint_matches(config: TrainConfig) -> bool:
    """Whether `config.output_dir` holds no checkpoint, or one a run of `config` would resume
    exactly (same settings, same data file contents)."""
    from jaxcot.provenance import digest

    meta = latest_meta(os.path.join(config.output_dir, "checkpoints"))
    if meta is None:
        return True
    data = digest(config.data.path) if config.data.path and os.path.isfile(config.data.path) else None
    return not _resume_differences(meta, config, data)


# -- the run ------------------------------------------------------------------------------------


def prepare_data(config: TrainConfig, tokenizer=None, examples=None, *, verbose: bool = True):
    """(tokenizer, tokenized examples, rows, stats) for this config; see `jaxcot.data.sft`."""
    dc = config.data
    raw = examples if examples is not None else load_examples(
        dc.path, source=dc.source, split=dc.split, name=dc.name, prompt_field=dc.prompt_field,
        completion_field=dc.completion_field, limit=dc.limit,
    )
    tokenizer = tokenizer if tokenizer is not None else resolve_tokenizer(config, raw)
    exs, stats = tokenize_examples(
        tokenizer, raw, max_len=dc.max_len, overflow=dc.overflow, progress=verbose and config.progress
    )
    plan = functools.partial(plan_rows, [e.length for e in exs], seed=config.seed, max_len=dc.max_len,
                             packing=dc.packing, shuffle=dc.shuffle)
    if config.epochs is not None:
        rows = plan(epochs=config.epochs)
    else:  # as many passes as the step budget needs; the rows of earlier epochs do not depend on it
        need = config.max_steps * config.batch_size
        epochs = max(1, math.ceil(need / max(len(plan(epochs=1)), 1)))
        rows = plan(epochs=epochs)
        while len(rows) < need:
            epochs += 1
            rows = plan(epochs=epochs)
    return tokenizer, exs, rows, stats_with_rows(stats, len(rows), config.batch_size)


@dataclasses.dataclass
class _Run:
    """Everything a training run holds between its setup and its end."""

    config: TrainConfig
    out_dir: str
    say: Callable[[str], None]
    lead: bool
    layout: BatchLayout
    tokenizer: Any
    stats: SFTStats
    total: int
    graphdef: Any
    params: Any
    frozen: Any
    opt_state: Any
    shardings: Any
    iterator: Any
    ckpt: Checkpointer | None
    ckpt_dir: str
    start: int
    step_fn: Callable
    data_digest: str | None

    def save(self, step: int, loss: float | None) -> None:
        if self.ckpt is None:
            return
        self.ckpt.save(step, params=self.params, opt_state=self.opt_state, data_state=self.iterator.get_state(),
                       meta={"config": to_dict(self.config), "stats": dataclasses.asdict(self.stats), "step": step,
                             "loss": loss, "data_digest": self.data_digest})


def _mesh(config: TrainConfig):
    mc = config.mesh
    devices = jax.devices()
    if mc.devices:
        if jax.process_count() > 1:
            raise ValueError("mesh.devices (a device subset) is for single-process runs")
        devices = devices[: mc.devices]
    return make_mesh(mc.data, mc.fsdp, mc.tensor, devices=devices)


def _data_digest(config: TrainConfig, examples) -> str | None:
    """The training data's contents, as a digest a resumed run must match (None: a `datasets`
    source, whose loader caches by its own fingerprint)."""
    from jaxcot.provenance import content_digest, digest

    if examples is not None:
        return content_digest(examples)
    if config.data.source == "jsonl":
        return digest(config.data.path)
    return None


def _setup(config: TrainConfig, tokenizer, examples, cache: dict | None) -> _Run:
    """Mesh, data, model, optimizer and checkpoint of a run, resumed from its last checkpoint."""

    distributed.initialize(config.distributed)
    lead = jax.process_index() == 0
    say = get_logger("train").info  # process 0's lines only (see jaxcot.logs)
    out_dir = os.path.abspath(config.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    mesh = _mesh(config)
    n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    layout = BatchLayout(config.batch_size, config.grad_accum, jax.process_index(), jax.process_count())
    if layout.micro % n_batch_shards:
        raise ValueError(
            f"micro-batch size {layout.micro} (batch_size / grad_accum) must be a multiple of "
            f"data x fsdp = {n_batch_shards}"
        )

    tokenizer, exs, rows, stats = prepare_data(config, tokenizer, examples, verbose=lead)
    data_digest = _data_digest(config, examples)
    say(f"data: {stats.summary()}")
    n_batches = len(rows) // layout.batch_size
    total = n_batches if config.max_steps is None else min(n_batches, config.max_steps)
    buckets = tuple(config.data.buckets) or run_buckets(
        exs, rows, layout.batch_size, total, max_len=config.data.max_len, steps=config.data.bucket_steps,
        fit=config.data.fit_buckets,
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dataset = batch_pipeline(exs, rows, layout, buckets=buckets, pad_id=pad_id)

    model = build_model(config, tokenizer, mesh, cache)
    graphdef, params, frozen = split_model(model, config.method)
    del model
    tx, schedule = make_optimizer(config.optim, total)
    sh = step_shardings(mesh, params, frozen, jax.eval_shape(tx.init, params))
    params, frozen = place(params, sh.params), place(frozen, sh.frozen)
    opt_state = jax.jit(tx.init, out_shardings=sh.opt_state)(params)
    n_train = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    say(f"model: {config.method}, {n_train:,} trainable parameters; mesh {dict(mesh.shape)}; {total} steps")

    iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    ckpt = (
        Checkpointer(ckpt_dir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
        if config.checkpoint.enabled else None
    )
    start = 0
    latest = ckpt.latest_step() if ckpt is not None and config.checkpoint.resume else None
    if latest is not None:
        _check_resumable(ckpt.read_meta(latest), config, ckpt_dir, data_digest)
        params, opt_state, meta = ckpt.restore(
            latest, params=params, opt_state=opt_state, shardings_params=sh.params,
            shardings_opt=sh.opt_state, iterator=iterator,
        )
        start = int(meta["step"])
        say(f"resumed from {ckpt_dir} at step {start}")
    if lead:
        with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(to_dict(config), f, indent=2)

    step_key = ("step", graphdef, mesh, json.dumps(dataclasses.asdict(config.optim)), total, config.data.packing,
                config.remat)
    step_fn = None if cache is None else cache.get(step_key)
    if step_fn is None:
        step_fn = make_train_step(graphdef, tx, schedule, sh, packed=config.data.packing, remat=config.remat)
        if cache is not None:
            cache[step_key] = step_fn
    return _Run(config, out_dir, say, lead, layout, tokenizer, stats, total, graphdef, params, frozen, opt_state, sh,
                iterator, ckpt, ckpt_dir, start, step_fn, data_digest)


def _step(run: _Run, step: int) -> dict[str, jax.Array]:
    """One optimizer step on the next global batch; its metrics stay on the device (scalars)."""
    local = next(run.iterator)
    batch = {
        k: jax.make_array_from_process_local_data(run.shardings.batch, v, (v.shape[0], run.layout.micro) + v.shape[2:])
        for k, v in local.items()
    }
    run.params, run.opt_state, m = run.step_fn(run.params, run.opt_state, run.frozen, batch,
                                               jnp.asarray(step, jnp.int32))
    return m


class _Metrics:
    """Step metrics, fetched from the device a window at a time (every `log.every` steps, and
    before anything that must know them: a checkpoint, a callback, the end). Each fetched step is
    checked (a non-finite loss raises `TrainingDiverged` naming the step and the last good
    checkpoint) and written to metrics.jsonl and TensorBoard. Step time is the window's wall time
    over its steps: with asynchronous dispatch one step's own time is not observable."""

    def __init__(self, run: _Run, log: MetricsLog, bar):
        self.run, self.log, self.bar = run, log, bar
        self.pending: list[tuple[int, dict]] = []
        self.t0 = time.perf_counter()
        self.last: dict[str, float] | None = None
        self.tb = None
        if run.lead and run.config.log.tensorboard:
            from jaxcot.logs import tensorboard_writer

            self.tb = tensorboard_writer(os.path.join(run.out_dir, "tensorboard"), purge_step=run.start + 1)

    def add(self, step: int, m: dict) -> None:
        self.pending.append((step, m))
        if len(self.pending) >= self.run.config.log.every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        fetched = jax.device_get([m for _, m in self.pending])
        now = time.perf_counter()
        step_s = (now - self.t0) / len(self.pending)
        for (step, _), m in zip(self.pending, fetched):
            m = {k: float(v) for k, v in m.items()}
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                self.pending = []
                self._diverged(step, m)
            rec = dict(step=step, loss=m["loss"], lr=m["lr"], grad_norm=m["grad_norm"], tokens=int(m["tokens"]),
                       target_tokens=int(m["target_tokens"]), tokens_per_s=m["tokens"] / step_s, step_s=step_s)
            self.log.write(rec)
            if self.tb is not None:
                for k in ("loss", "lr", "grad_norm", "tokens_per_s"):
                    self.tb.add_scalar(f"train/{k}", rec[k], step)
            self.last = rec
        self.pending, self.t0 = [], now
        if self.tb is not None:
            self.tb.flush()
        r = self.last
        self.bar.set_postfix(loss=f"{r['loss']:.4f}", lr=f"{r['lr']:.2e}", gnorm=f"{r['grad_norm']:.3f}",
                             tok_s=f"{r['tokens_per_s']:.0f}")

    def _diverged(self, step: int, m: dict):
        run = self.run
        good = None
        if run.ckpt is not None:
            run.ckpt.wait()
            good = run.ckpt.latest_step()
        raise TrainingDiverged(
            f"step {step}: loss {m['loss']}, grad norm {m['grad_norm']} (not finite); stopped. "
            + (f"The last good checkpoint is step {good} in {run.ckpt_dir}." if good is not None
               else "No checkpoint was saved before it.")
        )

    @property
    def loss(self) -> float | None:
        return None if self.last is None else self.last["loss"]

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class _Profile:
    """A `jax.profiler` trace of the steps `log.profile_from` .. + `log.profile_steps` - 1."""

    def __init__(self, run: _Run):
        log = run.config.log
        self.first = log.profile_from
        self.last = None if log.profile_from is None else log.profile_from + log.profile_steps - 1
        self.dir = os.path.join(run.out_dir, "profile")
        self.on = False

    def before(self, step: int) -> None:  # step: 1-based number of the step about to run
        if self.first is not None and step == self.first:
            jax.profiler.start_trace(self.dir)
            self.on = True

    def after(self, step: int, wait) -> None:
        if self.on and step >= self.last:
            wait()  # the traced steps' device work belongs in the trace
            jax.profiler.stop_trace()
            self.on = False

    def close(self) -> None:
        if self.on:
            jax.profiler.stop_trace()
            self.on = False


def train(
    config: TrainConfig,
    *,
    tokenizer=None,
    examples: Sequence | None = None,
    stop_after: int | None = None,
    handle_sigterm: bool = True,
    cache: dict | None = None,
    callback: Callable[[int, Decoder], None] | None = None,
    callback_every: int = 0,
) -> TrainResult:
    """Run (or resume) the SFT run `config` describes.

    tokenizer / examples: in-memory alternatives to `config.tokenizer` / `config.data.path`
    (examples are (prompt, completion) pairs). stop_after: save and stop once that many steps
    are done (a deterministic interruption; status 'stopped'). On SIGTERM the run saves and
    returns with status 'preempted'. A non-finite loss raises `TrainingDiverged`, leaving the
    last good checkpoint in place. cache: a dict passed to several `train` calls in one process
    (a sweep, a resume in a notebook) so that identical init and step functions compile once.
    callback(step, model): called every `callback_every` steps (before the end) with the current
    model, e.g. to measure accuracy during training; it must not modify the model.
    Returns a `TrainResult`.
    """
    distributed.initialize(config.distributed)  # before asking which process this is
    adapter = config.adapter_dir or (config.export_dir and config.resolved_adapter_dir)
    explicit = [config.output_dir, config.export_dir, adapter]
    if any(p and storage.is_remote(p) for p in explicit) and jax.process_count() > 1:
        raise ValueError("remote output folders (gs://...) are mirrored through one host's disk: "
                         "train on several hosts into a folder every host sees")
    with storage.local_folders(explicit) as ((out, exp, adapter), push):
        local = dataclasses.replace(config, output_dir=out, export_dir=exp, adapter_dir=adapter)
        lock = output_lock(local.output_dir) if jax.process_index() == 0 else contextlib.nullcontext()
        with lock:
            return _train(local, tokenizer, examples, stop_after, handle_sigterm, cache, callback, callback_every,
                          push)


def _train(config, tokenizer, examples, stop_after, handle_sigterm, cache, callback, callback_every,
           push=None) -> TrainResult:
    from jaxcot.logs import progress

    run = _setup(config, tokenizer, examples, cache)
    total = run.total
    metrics_log = MetricsLog(os.path.join(run.out_dir, "metrics.jsonl"), run.start, run.lead)
    preempt = Preemption(handle_sigterm)
    status, step = "finished", run.start
    bar = progress(total, initial=run.start, desc="train", unit="step", enabled=run.lead and config.progress)
    metrics = _Metrics(run, metrics_log, bar)
    profile = _Profile(run)

    def save(step):
        metrics.flush()  # never checkpoint past a step whose loss was not finite
        run.save(step, metrics.loss)
        if push is not None:  # remote folders: the checkpoint leaves this machine before training goes on
            if run.ckpt is not None:
                run.ckpt.wait()
            push()

    try:
        while step < total:
            profile.before(step + 1)
            metrics.add(step + 1, _step(run, step))
            step += 1
            profile.after(step, lambda: jax.block_until_ready(run.params))
            bar.update(1)
            if callback is not None and callback_every > 0 and step % callback_every == 0 and step < total:
                metrics.flush()
                callback(step, nnx.merge(run.graphdef, run.params, run.frozen))
            if step % config.checkpoint.every == 0 or step == total:
                save(step)
            if step < total and preempt.requested():
                save(step)
                status = "preempted"
                run.say(f"SIGTERM: saved step {step} to {run.ckpt_dir}; rerun the same command to resume"
                        if run.ckpt is not None else f"SIGTERM: stopped at step {step} (checkpoints disabled)")
                break
            if stop_after is not None and step >= stop_after and step < total:
                save(step)
                status = "stopped"
                break
        metrics.flush()
        if step == total and total == run.start and run.start > 0:
            run.say(f"run already complete at step {total}")
    finally:
        profile.close()
        bar.close()
        metrics.close()
        metrics_log.close()
        preempt.restore()
        if run.ckpt is not None:
            run.ckpt.close()  # finishes async saves before returning (or raising)
    loss = metrics.loss

    trained = nnx.merge(run.graphdef, run.params, run.frozen)
    export_dir = adapter_dir = None
    if status == "finished" and config.export:
        dtype = jnp.dtype(config.export_dtype)
        if config.export_format in ("merged", "both"):
            export_dir = export(trained, config.resolved_export_dir, run.tokenizer, dtype=dtype)
            run.say(f"exported the merged model to {export_dir}")
        if config.method == "lora" and config.export_format in ("adapter", "both"):
            adapter_dir = export_adapter(trained, config.resolved_adapter_dir, run.tokenizer, dtype=dtype,
                                         base_model=config.init_from)
            run.say(f"exported the LoRA adapter (PEFT) to {adapter_dir}")
    return TrainResult(
        status=status, step=step, total_steps=total, loss=loss, stats=run.stats, output_dir=run.out_dir,
        checkpoint_dir=run.ckpt_dir, export_dir=export_dir, model=trained, tokenizer=run.tokenizer,
        adapter_dir=adapter_dir,
    )


def _export_with(save: Callable[[Decoder], Any], model: Decoder, path: str, barrier: str) -> str:
    """Gather the model to every host, let process 0 `save` it, then meet at a barrier."""
    graphdef, state = nnx.split(model)
    host = gather_to_host(state.to_pure_dict())
    if jax.process_index() == 0:
        save(nnx.merge(graphdef, host))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(barrier)
    return os.path.abspath(path)


def export(model: Decoder, path: str, tokenizer=None, *, dtype=jnp.float32) -> str:
    """Save the model (LoRA merged) as a HF folder; process 0 writes, all processes gather."""
    from jaxcot.models.params import save_hf

    return _export_with(lambda m: save_hf(m, path, tokenizer=tokenizer, dtype=dtype), model, path, "jaxcot-export")


def export_adapter(model: Decoder, path: str, tokenizer=None, *, dtype=jnp.float32, base_model: str | None = None
                   ) -> str:
    """Save the model's LoRA factors as a PEFT adapter folder (see `jaxcot.models.adapters`)."""
    from jaxcot.models.adapters import save_peft_adapter

    base = os.path.abspath(base_model) if base_model and os.path.exists(base_model) else base_model
    return _export_with(lambda m: save_peft_adapter(m, path, base_model=base, dtype=dtype, tokenizer=tokenizer),
                        model, path, "jaxcot-export-adapter")


__all__ = [
    "Preemption", "TrainResult", "TrainingDiverged", "build_model", "export", "export_adapter", "init_sharded",
    "prepare_data", "train",
]
