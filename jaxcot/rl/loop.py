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

import dataclasses
import json
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcot.config import to_dict
from jaxcot.distributed import Share
from jaxcot.generate import Generator
from jaxcot.generate.api import length_batches
from jaxcot.generate.sampler import FINISH_REASONS
from jaxcot.logs import get_logger
from jaxcot.programs import ProgramCache
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
from jaxcot.text.prompts import prompt_ids
from jaxcot.train import runtime
from jaxcot.train.checkpoint import Checkpointer
from jaxcot.train.runtime import Progress, StepDriver, TrainingDiverged, TrainState


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
    state: TrainState
    ref_params: Any
    policy: Callable
    logps: Callable
    steps: dict
    ckpt: Checkpointer | None
    start: int
    programs: ProgramCache = dataclasses.field(default_factory=ProgramCache)


@dataclasses.dataclass(frozen=True)
class GRPOStepKey:
    """Every static setting a compiled GRPO update (`make_grpo_step`) depends on, as the key it is
    cached under: graphdef (the model's structure), mesh, optim (the `OptimConfig` as JSON: the
    config class is mutable, so not hashable itself), updates (the schedule's length), the loss's
    settings, the sampling temperature, and whether it is a batch's first iteration."""

    graphdef: Any
    mesh: Any
    optim: str
    updates: int
    settings: LossSettings
    temperature: float
    first_iteration: bool


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


def checkpoint_matches(config: GRPOConfig) -> bool:
    """Whether `config.output_dir` holds no checkpoint, or one a run of `config` would resume."""
    return runtime.checkpoint_matches(config, RESUMABLE_KEYS)


def _mesh(config: GRPOConfig):
    """The update's (data, fsdp, tensor) mesh, over every process's devices."""
    mesh = runtime.trainer_mesh(config.mesh)
    micro = config.rows // config.grad_accum
    runtime.check_micro_batch(mesh, micro, f"micro-batch of {micro} completions (prompts_per_step x "
                                           "num_generations / grad_accum)")
    return mesh


@dataclasses.dataclass(frozen=True)
class PolicyProgramKey:
    """What the compiled export of the trained weights to the sampler's layout depends on."""

    graphdef: Any
    model: Any
    mesh: Any
    sampler_mesh: Any
    compute_dtype: str
    param_dtype: str


@dataclasses.dataclass(frozen=True)
class LogpsProgramKey:
    """What the compiled per-token log-probabilities of completions depend on."""

    graphdef: Any
    mesh: Any
    temperature: float


def _update_programs(config: GRPOConfig, state: TrainState, mesh, cache: ProgramCache) -> dict[bool, Callable]:
    """The compiled update of a batch's first iteration (True) and of the later ones (False), from
    `cache` when it holds them."""
    settings = LossSettings(config.epsilon, config.epsilon if config.epsilon_high is None else config.epsilon_high,
                            config.beta, config.loss_type)
    temperature = config.sampling.temperature
    optim, updates = json.dumps(dataclasses.asdict(config.optim)), config.max_steps * config.num_iterations
    steps = {}
    for first in (True, False):
        key = GRPOStepKey(state.graphdef, mesh, optim, updates, settings, temperature, first)
        steps[first] = cache.get_or_compile(key, lambda first=first: make_grpo_step(
            state.graphdef, state.tx, state.schedule, state.shardings, settings, temperature, first_iteration=first))
    return steps


def _setup(config: GRPOConfig, tokenizer, questions, cache: ProgramCache | None) -> _Run:
    """Questions, model, optimizer, programs (from `cache` when it holds them) and checkpoint of a
    run, resumed if one was saved."""
    from jaxcot.models import load_model, load_tokenizer

    say = get_logger("rl").info
    out_dir = runtime.output_folder(config)
    mesh = _mesh(config)
    sampler_mesh = rollout_mesh(mesh)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.init_from)
    questions = questions if questions is not None else _questions(config)
    prompts = [prompt_ids(tokenizer, q["question"], config.data.prompt) for q in questions]
    dtype, param_dtype = runtime.DTYPES[config.compute_dtype], runtime.DTYPES[config.param_dtype]
    model = runtime.attach_lora(load_model(config.init_from, dtype=dtype, param_dtype=param_dtype, mesh=mesh), config)
    model_config = model.config
    state = runtime.init_state(model, config, mesh, config.max_steps * config.num_iterations)
    del model
    ref_params = jax.tree.map(jnp.copy, state.params) if config.beta else None
    cache = ProgramCache.given(cache, "grpo")
    steps = _update_programs(config, state, mesh, cache)
    ckpt = runtime.open_checkpoints(out_dir, config.checkpoint)
    start = runtime.resume(state, ckpt, config, RESUMABLE_KEYS, iterator=_NoDataState(), say=say)
    say(f"GRPO: {len(questions)} questions, {config.method} ({state.trainable():,} trainable parameters), mesh "
        f"{dict(mesh.shape)}, {config.max_steps} steps of {config.prompts_per_step} x {config.num_generations}")
    runtime.save_config(out_dir, config, jax.process_index() == 0)
    policy = cache.get_or_compile(
        PolicyProgramKey(state.graphdef, model_config, mesh, sampler_mesh, config.compute_dtype, config.param_dtype),
        lambda: make_policy_export(state.graphdef, model_config, mesh, dtype=dtype, param_dtype=param_dtype,
                                   sampler_mesh=sampler_mesh))
    logps = cache.get_or_compile(LogpsProgramKey(state.graphdef, mesh, config.sampling.temperature),
                                 lambda: make_logps_fn(state.graphdef, state.shardings, config.sampling.temperature))
    share = Share(jax.process_index(), jax.process_count())
    return _Run(config, out_dir, tokenizer, questions, prompts, mesh, sampler_mesh, share, state, ref_params, policy,
                logps, steps, ckpt, start, cache)


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
    st = run.state
    gen = Generator(run.policy(st.params, st.frozen), run.tokenizer, mesh=run.sampler_mesh, programs=run.programs,
                    engine=cfg.engine)
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
    st = run.state
    batch = place_batch(arrays, batch_shardings(st.shardings))
    if cfg.num_iterations > 1:
        batch["old_logps"] = run.logps(st.params, st.frozen, batch)
    if cfg.beta:
        batch["ref_logps"] = run.logps(run.ref_params, st.frozen, batch)
    first = None
    for it in range(cfg.num_iterations):
        update = jnp.asarray(step * cfg.num_iterations + it, jnp.int32)
        st.params, st.opt_state, m = run.steps[it == 0](st.params, st.opt_state, st.frozen, batch, update)
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
        run.ckpt.save(step, params=run.state.params, opt_state=run.state.opt_state, data_state={},
                      meta={"config": to_dict(run.config), "step": step, "metrics": rec})


def grpo(config: GRPOConfig, *, tokenizer=None, questions: Sequence[dict] | None = None,
         stop_after: int | None = None, handle_sigterm: bool = True,
         cache: ProgramCache | None = None) -> GRPOResult:
    """Run (or resume) the GRPO run `config` describes.

    tokenizer / questions: in-memory alternatives to the model's tokenizer and `config.data`
    ({id, question, gold} records). stop_after: save and stop once that many steps are done.
    On SIGTERM the run saves and returns with status 'preempted'. cache: a `ProgramCache` passed
    to several `grpo` (and `train`) calls in one process (a sweep, a resume in a notebook) so
    that their programs compile once. Several processes (`config.distributed`, or a
    `jax.distributed` job already started) run it together: each samples its share of every
    step's rollouts, the updates are one SPMD program over all their devices, and process 0
    writes the logs, config and export (the output folder must be one every host sees). Returns a `GRPOResult`.
    """
    folders = dict(output_dir=config.output_dir, export_dir=config.export_dir)
    with runtime.local_run(config, "run GRPO", **folders) as (local, push):
        return _grpo(local, tokenizer, None if questions is None else list(questions), stop_after, handle_sigterm,
                     cache, push)


_REPORT = Progress(desc="grpo", tag="grpo", scalars=("reward", "loss", "kl", "clip_ratio", "completion_tokens",
                                                    "grad_norm"))


def _grpo(config, tokenizer, questions, stop_after, handle_sigterm, cache, push=None) -> GRPOResult:
    run = _setup(config, tokenizer, questions, cache)
    say = get_logger("rl").info
    history = []
    with StepDriver(config, _REPORT, out_dir=run.out_dir, start=run.start, total=config.max_steps,
                    lead=run.share.lead, ckpt=run.ckpt, handle_sigterm=handle_sigterm, say=say, push=push) as driver:

        def one(step):
            rec = _grpo_step(run, step)
            history.append(rec)
            driver.write(rec)
            driver.bar.set_postfix(reward=f"{rec['reward']:.3f}", tokens=f"{rec['completion_tokens']:.0f}")

        status, step = driver.run(one, lambda step: _save(run, step, history[-1]), stop_after)
    policy = run.state.model()
    export_dir = None
    if status == "finished" and config.export:
        export_dir = runtime.export(policy, config.resolved_export_dir, run.tokenizer)
        say(f"exported the policy (LoRA merged) to {export_dir}")
    return GRPOResult(status, step, config.max_steps, history, run.out_dir, runtime.checkpoint_dir(run.out_dir),
                      export_dir, policy, run.tokenizer)


__all__ = ["GRPOResult", "GRPOStepKey", "checkpoint_matches", "grpo"]
