"""`train(config)`: the SFT run from examples to a checkpointed, exported model.

Same code on one CPU, 8 simulated devices, or a multi-host pod: each process tokenizes the data,
plans the same global batches, feeds its own rows through grain, and the jitted step runs on the
(data, fsdp, tensor) mesh. Preemption (SIGTERM) saves a checkpoint and returns; a rerun of the
same command resumes exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import grain
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcot import distributed
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
from jaxcot.logs import get_logger
from jaxcot.models.config import ModelConfig
from jaxcot.models.decoder import Decoder, abstract_model
from jaxcot.programs import ProgramCache
from jaxcot.sharding import tree_shardings
from jaxcot.train.checkpoint import Checkpointer
from jaxcot.train.config import RESUMABLE_KEYS, TrainConfig
from jaxcot.train.runtime import (
    DTYPES,
    Preemption,
    Progress,
    StepDriver,
    TrainingDiverged,
    TrainState,
    attach_lora,
    check_micro_batch,
    checkpoint_dir,
    checkpoint_matches as _matches,
    export,
    export_adapter,
    init_state,
    local_run,
    open_checkpoints,
    output_folder,
    resume,
    save_config,
    trainer_mesh,
)
from jaxcot.train.step import make_train_step


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


@dataclasses.dataclass(frozen=True)
class InitProgramKey:
    """What a compiled sharded init (`init_sharded`) depends on: the architecture, the seed, the
    mesh and the dtypes."""

    config: ModelConfig
    seed: int
    mesh: Any
    dtype: str
    param_dtype: str


def init_sharded(cfg: ModelConfig, seed: int, mesh, *, dtype, param_dtype,
                 cache: ProgramCache | None = None) -> Decoder:
    """A random `Decoder` (same values as `init_model(cfg, seed)`) created directly in its shards.

    cache: programs reused across calls in this process, so the same init compiles once.
    """
    graphdef, state = nnx.split(abstract_model(cfg, dtype=dtype, param_dtype=param_dtype))

    def compile_init():
        def init():
            return nnx.state(Decoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=param_dtype)).to_pure_dict()

        return jax.jit(init, out_shardings=tree_shardings(state.to_pure_dict(), mesh))

    key = InitProgramKey(cfg, seed, mesh, jnp.dtype(dtype).name, jnp.dtype(param_dtype).name)
    return nnx.merge(graphdef, (cache if cache is not None else ProgramCache()).get_or_compile(key, compile_init)())


def build_model(config: TrainConfig, tokenizer, mesh, cache: ProgramCache | None = None) -> Decoder:
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
    return attach_lora(model, config)


def checkpoint_matches(config: TrainConfig) -> bool:
    """Whether `config.output_dir` holds no checkpoint, or one a run of `config` would resume
    exactly (same settings, same data file contents)."""
    from jaxcot.provenance import digest

    return _matches(config, RESUMABLE_KEYS, lambda: digest(config.data.path)
                    if config.data.path and os.path.isfile(config.data.path) else None)


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


@dataclasses.dataclass(frozen=True)
class StepProgramKey:
    """Every static setting the compiled SFT step (`make_train_step`) depends on, as the key it is
    cached under: two runs share a compiled step only when all of these agree.

    graphdef: the model's structure (family, sizes, dtypes, LoRA or not); method: which leaves
    train; mesh: the devices and axes the step is partitioned over; optim: the `OptimConfig` as
    JSON (the config class is mutable, so not hashable itself); updates: the schedule's length;
    packed: several examples per row (the attention masks by segment); remat: recomputed blocks."""

    graphdef: Any
    method: str
    mesh: Any
    optim: str
    updates: int
    packed: bool
    remat: bool


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
    state: TrainState
    iterator: Any
    ckpt: Checkpointer | None
    start: int
    step_fn: Callable
    data_digest: str | None

    @property
    def ckpt_dir(self) -> str:
        return checkpoint_dir(self.out_dir)

    def save(self, step: int, loss: float | None) -> None:
        if self.ckpt is None:
            return
        self.ckpt.save(step, params=self.state.params, opt_state=self.state.opt_state,
                       data_state=self.iterator.get_state(),
                       meta={"config": to_dict(self.config), "stats": dataclasses.asdict(self.stats), "step": step,
                             "loss": loss, "data_digest": self.data_digest})


def _data_digest(config: TrainConfig, examples) -> str | None:
    """The training data's contents, as a digest a resumed run must match (None: a `datasets`
    source, whose loader caches by its own fingerprint)."""
    from jaxcot.provenance import content_digest, digest

    if examples is not None:
        return content_digest(examples)
    if config.data.source == "jsonl":
        return digest(config.data.path)
    return None


def _step_program(config: TrainConfig, state: TrainState, mesh, total: int, cache: ProgramCache) -> Callable:
    """The compiled train step of this run, from `cache` (under its `StepProgramKey`) when it holds it."""
    key = StepProgramKey(state.graphdef, config.method, mesh, json.dumps(dataclasses.asdict(config.optim)), total,
                         config.data.packing, config.remat)
    return cache.get_or_compile(key, lambda: make_train_step(state.graphdef, state.tx, state.schedule, state.shardings,
                                                             packed=config.data.packing, remat=config.remat))


def _setup(config: TrainConfig, tokenizer, examples, cache: ProgramCache | None) -> _Run:
    """Mesh, data, model, optimizer and checkpoint of a run, resumed from its last checkpoint."""
    cache = ProgramCache.given(cache, "train")
    distributed.initialize(config.distributed)
    lead = jax.process_index() == 0
    say = get_logger("train").info  # process 0's lines only (see jaxcot.logs)
    out_dir = output_folder(config)
    mesh = trainer_mesh(config.mesh)
    layout = BatchLayout(config.batch_size, config.grad_accum, jax.process_index(), jax.process_count())
    check_micro_batch(mesh, layout.micro, f"micro-batch size {layout.micro} (batch_size / grad_accum)")

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
    if config.data.max_len > model.config.max_position_embeddings:
        raise ValueError(f"data.max_len {config.data.max_len} is longer than the model's context of "
                         f"{model.config.max_position_embeddings} positions: lower data.max_len")
    state = init_state(model, config, mesh, total)
    del model  # the state holds the placed parameters
    say(f"model: {config.method}, {state.trainable():,} trainable parameters; mesh {dict(mesh.shape)}; {total} steps")

    iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))
    ckpt = open_checkpoints(out_dir, config.checkpoint)
    start = resume(state, ckpt, config, RESUMABLE_KEYS, iterator=iterator, data_digest=data_digest, say=say)
    save_config(out_dir, config, lead)
    return _Run(config, out_dir, say, lead, layout, tokenizer, stats, total, state, iterator, ckpt, start,
                _step_program(config, state, mesh, total, cache), data_digest)


def _step(run: _Run, step: int) -> dict[str, jax.Array]:
    """One optimizer step on the next global batch; its metrics stay on the device (scalars)."""
    local = next(run.iterator)
    st = run.state
    batch = {
        k: jax.make_array_from_process_local_data(st.shardings.batch, v, (v.shape[0], run.layout.micro) + v.shape[2:])
        for k, v in local.items()
    }
    st.params, st.opt_state, m = run.step_fn(st.params, st.opt_state, st.frozen, batch, jnp.asarray(step, jnp.int32))
    return m


class _Metrics:
    """Step metrics, fetched from the device a window at a time (every `log.every` steps, and
    before anything that must know them: a checkpoint, a callback, the end). Each fetched step is
    checked (a non-finite loss raises `TrainingDiverged` naming the step and the last good
    checkpoint) and written to metrics.jsonl and TensorBoard. Step time is the window's wall time
    over its steps: with asynchronous dispatch one step's own time is not observable."""

    def __init__(self, run: _Run, driver: StepDriver):
        self.run, self.driver = run, driver
        self.pending: list[tuple[int, dict]] = []
        self.t0 = time.perf_counter()
        self.last: dict[str, float] | None = None

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
            self.driver.write(rec)
            self.last = rec
        self.pending, self.t0 = [], now
        self.driver.flush()
        r = self.last
        self.driver.bar.set_postfix(loss=f"{r['loss']:.4f}", lr=f"{r['lr']:.2e}", gnorm=f"{r['grad_norm']:.3f}",
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
    cache: ProgramCache | None = None,
    callback: Callable[[int, Decoder], None] | None = None,
    callback_every: int = 0,
) -> TrainResult:
    """Run (or resume) the SFT run `config` describes.

    tokenizer / examples: in-memory alternatives to `config.tokenizer` / `config.data.path`
    (examples are (prompt, completion) pairs). stop_after: save and stop once that many steps
    are done (a deterministic interruption; status 'stopped'). On SIGTERM the run saves and
    returns with status 'preempted'. A non-finite loss raises `TrainingDiverged`, leaving the
    last good checkpoint in place. cache: a `jaxcot.programs.ProgramCache` passed to several `train`
    (and `grpo`) calls in one process (a sweep, a resume in a notebook) so that identical init and
    step programs compile once.
    callback(step, model): called every `callback_every` steps (before the end) with the current
    model, e.g. to measure accuracy during training; it must not modify the model.
    Returns a `TrainResult`.
    """
    adapter = config.adapter_dir or (config.export_dir and config.resolved_adapter_dir)
    with local_run(config, "train", output_dir=config.output_dir, export_dir=config.export_dir,
                   adapter_dir=adapter) as (local, push):
        return _train(local, tokenizer, examples, stop_after, handle_sigterm, cache, callback, callback_every, push)


_REPORT = Progress(desc="train", tag="train", scalars=("loss", "lr", "grad_norm", "tokens_per_s"))


def _train(config, tokenizer, examples, stop_after, handle_sigterm, cache, callback, callback_every,
           push=None) -> TrainResult:
    run = _setup(config, tokenizer, examples, cache)
    total, st = run.total, run.state
    with StepDriver(config, _REPORT, out_dir=run.out_dir, start=run.start, total=total, lead=run.lead,
                    ckpt=run.ckpt, handle_sigterm=handle_sigterm, say=run.say, push=push) as driver:
        metrics = _Metrics(run, driver)
        profile = _Profile(run)

        def one(step):
            profile.before(step + 1)
            metrics.add(step + 1, _step(run, step))
            profile.after(step + 1, lambda: jax.block_until_ready(st.params))
            if callback is not None and callback_every > 0 and (step + 1) % callback_every == 0 and step + 1 < total:
                metrics.flush()
                callback(step + 1, st.model())

        def save(step):
            metrics.flush()  # never checkpoint past a step whose loss was not finite
            run.save(step, metrics.loss)

        try:
            status, step = driver.run(one, save, stop_after)
            metrics.flush()
            if step == total and total == run.start and run.start > 0:
                run.say(f"run already complete at step {total}")
        finally:
            profile.close()
    return _finish(run, status, step, metrics.loss)


def _finish(run: _Run, status: str, step: int, loss: float | None) -> TrainResult:
    """The run's result, after exporting the model as `config.export_format` asks (a finished run)."""
    config = run.config
    trained = run.state.model()
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
        status=status, step=step, total_steps=run.total, loss=loss, stats=run.stats, output_dir=run.out_dir,
        checkpoint_dir=run.ckpt_dir, export_dir=export_dir, model=trained, tokenizer=run.tokenizer,
        adapter_dir=adapter_dir,
    )


__all__ = [
    "Preemption", "StepProgramKey", "TrainResult", "TrainingDiverged", "build_model", "checkpoint_matches", "export",
    "export_adapter", "init_sharded", "prepare_data", "train",
]
