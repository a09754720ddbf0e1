"""`grpo(config)`: GRPO from a student's model to a checkpointed, exported policy.

Each step: the step's questions (a seeded order), `num_generations` completions of each from the
compiled sampler running the current policy, rewards on the host, group-normalised advantages,
then `num_iterations` jitted updates on that batch. Several processes split each step's sampler
batches as generation splits a stage's, then all hold every completion and reward, so the
advantages and the update's batch are one process's (docs/method.md, GRPO). A step's rollouts
depend only on (seed, step) and the parameters, so a run resumed from a checkpoint takes exactly
the steps an uninterrupted one does. SIGTERM saves and returns; a non-finite loss stops before
anything is saved past it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcot import distributed, storage
from jaxcot.config import to_dict
from jaxcot.distributed import Share
from jaxcot.generate import Generator
from jaxcot.generate.api import length_batches
from jaxcot.generate.sampler import FINISH_REASONS
from jaxcot.io import output_lock
from jaxcot.logs import get_logger
from jaxcot.rl.config import RESUMABLE_KEYS, GRPOConfig
from jaxcot.rl.loss import LossSettings, group_advantages
from jaxcot.rl.rewards import score_rewards, with_grader
from jaxcot.rl.rollout import (
    make_policy_export,
    place_batch,
    rollout_arrays,
    rollout_mesh,
    share_rows,
    step_questions,
    zeros_like_rows,
)
from jaxcot.rl.step import batch_shardings, make_grpo_step, make_logps_fn
from jaxcot.sharding import make_mesh
from jaxcot.text.prompts import prompt_ids
from jaxcot.train.checkpoint import Checkpointer, latest_meta
from jaxcot.train.loop import DTYPES, MetricsLog, Preemption, TrainingDiverged, export, place
from jaxcot.train.lora import apply_lora
from jaxcot.train.step import make_optimizer, split_model, step_shardings


@dataclasses.dataclass
class GRPOResult:
    """status: 'finished', 'preempted' (SIGTERM) or 'stopped' (stop_after); `history`: one
    metrics record per step of this call; `model`: the policy (LoRA attached, not merged)."""

    status: str
    step: int
    total_steps: int
    history: list[dict]
    output_dir: str
    checkpoint_dir: str
    export_dir: str | None
    model: Any
    tokenizer: Any


class _NoDataState:
    """The checkpoint's data item: GRPO's questions are a function of (seed, step), nothing to keep."""

    def get_state(self) -> bytes:
        return b"{}"

    def set_state(self, state) -> None:
        pass

    def start_prefetch(self) -> None:  # grain's restore calls it on the item it restored
        pass


@dataclasses.dataclass
class _Run:
    config: GRPOConfig
    out_dir: str
    tokenizer: Any
    questions: list[dict]
    prompts: list[list[int]]
    mesh: Any  # the update's: every process's devices
    sampler_mesh: Any  # this process's devices of `mesh` (`mesh` itself for one process)
    share: Share
    graphdef: Any
    params: Any
    frozen: Any
    ref_params: Any
    opt_state: Any
    shardings: Any
    policy: Callable
    logps: Callable
    steps: dict
    ckpt: Checkpointer | None
    start: int
    programs: dict = dataclasses.field(default_factory=dict)


def _questions(config: GRPOConfig) -> list[dict]:
    from jaxcot.data.questions import QuestionFields, load_questions

    dc = config.data
    if not dc.path:
        raise ValueError("data.path: name the questions to sample from (a JSONL of {question, gold})")
    qs = load_questions(dc.path, QuestionFields(question_field=dc.question_field, answer_field=dc.answer_field,
                                                split=dc.split, limit=dc.limit))
    if not qs:
        raise ValueError(f"{dc.path}: no questions")
    if any(r.name == "correct" for r in config.rewards):
        missing = [q["id"] for q in qs if q.get("gold") is None]
        if missing:
            raise ValueError(f"{dc.path}: the 'correct' reward needs a gold answer; record {missing[0]!r} has none")
    return qs


def _differences(saved: dict, config: GRPOConfig) -> list[str]:
    """The settings in which a checkpointed run differs from `config`."""
    strip = lambda d: {k: v for k, v in json.loads(json.dumps(d)).items() if k not in RESUMABLE_KEYS}  # noqa: E731
    a, b = strip(saved["config"]), strip(to_dict(config))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def checkpoint_matches(config: GRPOConfig) -> bool:
    """Whether `config.output_dir` holds no checkpoint, or one a run of `config` would resume."""
    meta = latest_meta(os.path.join(config.output_dir, "checkpoints"))
    return meta is None or not _differences(meta, config)


def _check_resumable(saved: dict, config: GRPOConfig, where: str) -> None:
    diff = _differences(saved, config)
    if diff:
        raise ValueError(f"{where}: the checkpointed run differs in {', '.join(diff)}; resuming would not reproduce "
                         "it. Use a new output_dir or checkpoint.resume=false.")


def _mesh(config: GRPOConfig):
    """The update's (data, fsdp, tensor) mesh, over every process's devices."""
    mc = config.mesh
    if mc.devices and jax.process_count() > 1:
        raise ValueError("mesh.devices (a device subset) is for single-process runs")
    mesh = make_mesh(mc.data, mc.fsdp, mc.tensor, devices=jax.devices()[: mc.devices or None])
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if (config.rows // config.grad_accum) % shards:
        raise ValueError(f"micro-batch of {config.rows // config.grad_accum} completions (prompts_per_step x "
                         f"num_generations / grad_accum) must be a multiple of data x fsdp = {shards}")
    return mesh


def _setup(config: GRPOConfig, tokenizer, questions, cache: dict | None) -> _Run:
    """Questions, model, optimizer, programs (from `cache` when it holds them) and checkpoint of a
    run, resumed if one was saved."""
    from jaxcot.models import load_model, load_tokenizer

    say = get_logger("rl").info
    out_dir = os.path.abspath(config.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    mesh = _mesh(config)
    sampler_mesh = rollout_mesh(mesh)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.init_from)
    questions = questions if questions is not None else _questions(config)
    prompts = [prompt_ids(tokenizer, q["question"], config.data.prompt) for q in questions]
    dtype, param_dtype = DTYPES[config.compute_dtype], DTYPES[config.param_dtype]
    model = load_model(config.init_from, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
    model_config = model.config
    if config.method == "lora":
        lc = config.lora
        apply_lora(model, rank=lc.rank, alpha=lc.alpha, dropout=lc.dropout, targets=tuple(lc.targets),
                   seed=config.seed + 1, param_dtype=param_dtype)
    graphdef, params, frozen = split_model(model, config.method)
    del model
    updates = config.max_steps * config.num_iterations
    tx, schedule = make_optimizer(config.optim, updates)
    sh = step_shardings(mesh, params, frozen, jax.eval_shape(tx.init, params))
    params, frozen = place(params, sh.params), place(frozen, sh.frozen)
    ref_params = jax.tree.map(jnp.copy, params) if config.beta else None
    opt_state = jax.jit(tx.init, out_shardings=sh.opt_state)(params)
    cache = {} if cache is None else cache

    def cached(key, make):
        if key not in cache:
            cache[key] = make()
        return cache[key]

    temperature = config.sampling.temperature
    settings = LossSettings(config.epsilon, config.epsilon if config.epsilon_high is None else config.epsilon_high,
                            config.beta, config.loss_type)
    step_key = (graphdef, mesh, json.dumps(dataclasses.asdict(config.optim)), updates, settings, temperature)
    steps = {first: cached(("grpo-step", first, *step_key), lambda first=first: make_grpo_step(
        graphdef, tx, schedule, sh, settings, temperature, first_iteration=first)) for first in (True, False)}
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    ckpt = (Checkpointer(ckpt_dir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
            if config.checkpoint.enabled else None)
    start = 0
    latest = ckpt.latest_step() if ckpt is not None and config.checkpoint.resume else None
    if latest is not None:
        _check_resumable(ckpt.read_meta(latest), config, ckpt_dir)
        params, opt_state, meta = ckpt.restore(latest, params=params, opt_state=opt_state, shardings_params=sh.params,
                                               shardings_opt=sh.opt_state, iterator=_NoDataState())
        start = int(meta["step"])
        say(f"resumed from {ckpt_dir} at step {start}")
    n_train = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    say(f"GRPO: {len(questions)} questions, {config.method} ({n_train:,} trainable parameters), mesh "
        f"{dict(mesh.shape)}, {config.max_steps} steps of {config.prompts_per_step} x {config.num_generations}")
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(to_dict(config), f, indent=2)
    policy = cached(("grpo-policy", graphdef, model_config, mesh, sampler_mesh, config.compute_dtype,
                     config.param_dtype), lambda: make_policy_export(
        graphdef, model_config, mesh, dtype=dtype, param_dtype=param_dtype, sampler_mesh=sampler_mesh))
    logps = cached(("grpo-logps", graphdef, mesh, temperature), lambda: make_logps_fn(graphdef, sh, temperature))
    share = Share(jax.process_index(), jax.process_count())
    return _Run(config, out_dir, tokenizer, questions, prompts, mesh, sampler_mesh, share, graphdef, params, frozen,
                ref_params, opt_state, sh, policy, logps, steps, ckpt, start, cached("grpo-sampler-programs", dict))


@dataclasses.dataclass
class _Rollouts:
    """A step's completions, the same on every process: rows [N] (question indices), token_ids
    [N] (generated ids, EOS included), finish_reasons [N], total [N] (summed rewards), parts
    {term: [N] unweighted values}."""

    rows: list[int]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    total: np.ndarray
    parts: dict[str, np.ndarray]


def _own_rows(run: _Run, gen: Generator, prompts: list[list[int]]) -> tuple[list[int], list[int | None], int]:
    """(the rows this process samples, the prompt length each row's batch pads to [N], the batch
    size): the sampler's batches of the whole step (`length_batches`), process i of n taking
    batches i, i+n, ... (`Share.take`), as generation splits a stage's."""
    batch = run.config.rollout_batch_size or run.config.rows
    lengths = [len(p) for p in prompts]
    own = [j for b in run.share.take(length_batches(lengths, batch)) for j in b]
    return own, gen.plan_pad_to(lengths, batch), batch


def _rollout(run: _Run, step: int) -> _Rollouts:
    """Rollout step `step` from the current policy: each process samples and scores (once) its
    share of the [P*G] completions, then every process gets them all (`share_rows`)."""
    cfg = run.config
    picked = step_questions(len(run.questions), cfg.prompts_per_step, cfg.seed, step)
    rows = [i for i in picked for _ in range(cfg.num_generations)]
    prompts = [run.prompts[i] for i in rows]
    # every process exports the policy (a collective), also one left without a batch to sample
    gen = Generator(run.policy(run.params, run.frozen), run.tokenizer, mesh=run.sampler_mesh, programs=run.programs)
    own, pad_to, batch = _own_rows(run, gen, prompts)
    outs = gen.generate_ids([prompts[j] for j in own], max_new_tokens=cfg.max_new_tokens, sampling=cfg.sampling,
                            seed=cfg.seed, row_seeds=[step * cfg.rows + j for j in own], batch_size=batch,
                            pad_to=[pad_to[j] for j in own]) if own else []
    asked = [run.questions[rows[j]] for j in own]
    records = [dict(q, completion_tokens=len(o.token_ids), finish_reason=o.finish_reason) for q, o in zip(asked, outs)]
    total, parts = score_rewards(with_grader(cfg.rewards, cfg.grader), [q["question"] for q in asked],
                                 [o.text for o in outs], records)
    reasons = list(FINISH_REASONS.values())
    tokens = np.zeros((len(own), cfg.max_new_tokens), np.int32)
    for r, o in enumerate(outs):
        tokens[r, :len(o.token_ids)] = o.token_ids
    every = share_rows(own, dict(tokens=tokens, lengths=np.asarray([len(o.token_ids) for o in outs], np.int32),
                                 reasons=np.asarray([reasons.index(o.finish_reason) for o in outs], np.int32),
                                 total=np.asarray(total, np.float64).reshape(len(own)),
                                 parts=np.asarray(list(parts.values()), np.float64).reshape(len(parts), len(own)).T),
                       cfg.rows)
    return _Rollouts(rows, [t[:n].tolist() for t, n in zip(every["tokens"], every["lengths"])],
                     [reasons[k] for k in every["reasons"]], every["total"],
                     {k: every["parts"][:, i] for i, k in enumerate(parts)})


def _grpo_step(run: _Run, step: int) -> dict:
    """One rollout batch and its `num_iterations` updates; returns the step's metrics record."""
    cfg = run.config
    t0 = time.perf_counter()
    ro = _rollout(run, step)
    t_rollout = time.perf_counter() - t0
    adv = group_advantages(ro.total, cfg.num_generations, scale=cfg.scale_rewards)
    pad = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
    ra = rollout_arrays([run.prompts[i] for i in ro.rows], ro.token_ids, adv, cfg.grad_accum, pad_id=pad)
    arrays = dict(ra.arrays, old_logps=zeros_like_rows(ra.arrays), ref_logps=zeros_like_rows(ra.arrays))
    batch = place_batch(arrays, batch_shardings(run.shardings))
    if cfg.num_iterations > 1:
        batch["old_logps"] = run.logps(run.params, run.frozen, batch)
    if cfg.beta:
        batch["ref_logps"] = run.logps(run.ref_params, run.frozen, batch)
    first = None
    for it in range(cfg.num_iterations):
        update = jnp.asarray(step * cfg.num_iterations + it, jnp.int32)
        run.params, run.opt_state, m = run.steps[it == 0](run.params, run.opt_state, run.frozen, batch, update)
        first = m if first is None else first
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    m["ratio_first_iteration"] = float(first["ratio"])  # 1.0 exactly: the rollout policy is the current one
    if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
        raise TrainingDiverged(f"GRPO step {step + 1}: loss {m['loss']}, grad norm {m['grad_norm']} (not finite); "
                               "stopped before saving it")
    lengths = [len(t) for t in ro.token_ids]
    return dict(step=step + 1, reward=float(np.mean(ro.total)), reward_std=float(np.std(ro.total)),
                **{f"reward/{k}": float(np.mean(v)) for k, v in ro.parts.items()},
                completion_tokens=float(np.mean(lengths)), clipped_at_length=float(np.mean(
                    [r == "length" for r in ro.finish_reasons])), **m, rollout_s=t_rollout,
                step_s=time.perf_counter() - t0, completion_tokens_total=ra.completion_tokens, row_tokens=ra.row_tokens)


def _save(run: _Run, step: int, rec: dict | None) -> None:
    if run.ckpt is not None:
        run.ckpt.save(step, params=run.params, opt_state=run.opt_state, data_state={},
                      meta={"config": to_dict(run.config), "step": step, "metrics": rec})


def grpo(config: GRPOConfig, *, tokenizer=None, questions: Sequence[dict] | None = None,
         stop_after: int | None = None, handle_sigterm: bool = True, cache: dict | None = None) -> GRPOResult:
    """Run (or resume) the GRPO run `config` describes.

    tokenizer / questions: in-memory alternatives to the model's tokenizer and `config.data`
    ({id, question, gold} records). stop_after: save and stop once that many steps are done.
    On SIGTERM the run saves and returns with status 'preempted'. cache: a dict passed to several
    `grpo` calls in one process (a sweep, a resume in a notebook) so that their programs compile
    once. Several processes (`config.distributed`, or a `jax.distributed` job already started)
    run it together: each samples its share of every step's rollouts, the updates are one SPMD
    program over all their devices, and process 0 writes the logs, config and export (the output
    folder must be one every host sees). Returns a `GRPOResult`.
    """
    distributed.initialize(config.distributed)  # before asking which process this is
    if jax.process_count() > 1 and any(p and storage.is_remote(p) for p in (config.output_dir, config.export_dir)):
        raise ValueError("remote output folders (gs://...) are mirrored through one host's disk: "
                         "run GRPO on several hosts into a folder every host sees")
    with storage.local_folders([config.output_dir, config.export_dir]) as ((out, exp), push):
        local = dataclasses.replace(config, output_dir=out, export_dir=exp)
        with output_lock(local.output_dir) if jax.process_index() == 0 else contextlib.nullcontext():
            return _grpo(local, tokenizer, None if questions is None else list(questions), stop_after,
                         handle_sigterm, cache, push)


def _grpo(config, tokenizer, questions, stop_after, handle_sigterm, cache, push=None) -> GRPOResult:
    from jaxcot.logs import progress

    run = _setup(config, tokenizer, questions, cache)
    say = get_logger("rl").info
    lead = run.share.lead  # process 0 alone writes the log and shows progress
    log = MetricsLog(os.path.join(run.out_dir, "metrics.jsonl"), run.start, lead)
    tb = None
    if config.log.tensorboard and lead:
        from jaxcot.logs import tensorboard_writer

        tb = tensorboard_writer(os.path.join(run.out_dir, "tensorboard"), purge_step=run.start + 1)
    preempt = Preemption(handle_sigterm)
    status, step, history = "finished", run.start, []
    bar = progress(config.max_steps, initial=run.start, desc="grpo", unit="step", enabled=lead and config.progress)

    def save(step, rec):
        _save(run, step, rec)
        if push is not None:  # remote folders: the checkpoint leaves this machine before the run goes on
            if run.ckpt is not None:
                run.ckpt.wait()
            push()

    try:
        while step < config.max_steps:
            rec = _grpo_step(run, step)
            step += 1
            history.append(rec)
            log.write(rec)
            if tb is not None:
                for k in ("reward", "loss", "kl", "clip_ratio", "completion_tokens", "grad_norm"):
                    tb.add_scalar(f"grpo/{k}", rec[k], step)
            bar.update(1)
            bar.set_postfix(reward=f"{rec['reward']:.3f}", tokens=f"{rec['completion_tokens']:.0f}")
            if step % config.checkpoint.every == 0 or step == config.max_steps:
                save(step, rec)
            if step < config.max_steps and preempt.requested():
                save(step, rec)
                status = "preempted"
                say(f"SIGTERM: saved step {step}; rerun the same command to resume")
                break
            if stop_after is not None and step >= stop_after and step < config.max_steps:
                save(step, rec)
                status = "stopped"
                break
    finally:
        bar.close()
        log.close()
        preempt.restore()
        if tb is not None:
            tb.close()
        if run.ckpt is not None:
            run.ckpt.close()
    from flax import nnx

    policy = nnx.merge(run.graphdef, run.params, run.frozen)
    export_dir = None
    if status == "finished" and config.export:
        export_dir = export(policy, config.resolved_export_dir, run.tokenizer)
        say(f"exported the policy (LoRA merged) to {export_dir}")
    return GRPOResult(status, step, config.max_steps, history, run.out_dir,
                      os.path.join(run.out_dir, "checkpoints"), export_dir, policy, run.tokenizer)


__all__ = ["GRPOResult", "checkpoint_matches", "grpo"]
