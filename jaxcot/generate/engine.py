"""The sampler as an engine: continuous batching, early exit and KV eviction in one jitted loop.

Shapes: R slots (rows decoding at once, a multiple of the mesh's batch shards), Q queued prompts
(padded to a bucket; `count` of them real), T prompt slots, N = max_new_tokens, C chain slots per
row (N plus the trial's room; budget + 1 plus it under eviction), S = T + C cache slots, V
vocabulary, X = the trial's width (answer marker + answer tokens).

Continuous batching. The prompts wait in a queue on the device. Every slot holds one prompt's
sequence: its prompt in cache slots [0, T) (left-padded, prefilled alone when the slot frees),
its chain in slots [T, S), each token written to the row's first free chain slot
(`Decoder.decode_rows`: rows write different slots; a slot's place in the sequence is its
position, not its index). When a row ends, its outputs go to the queue index it serves and the
next prompt is prefilled into its slot while the other rows keep their caches. Each prompt
samples from its own stream, keyed by its row seed and its own token count (as the static
loop's rows do), so what it writes does not depend on which slot or neighbours it had. The
cache's chain slots grow in tiers (`cache_tiers`, as the static loop's phases): attention reads
every slot, and most chains never need the room of the longest.

Early exit (DEER, arXiv 2504.15895). When the token just fed ends a step (a `boundary` pattern,
e.g. a blank line), the row records its next chain token as usual, then tries the answer: it
feeds the answer marker, then greedy answer tokens until an end token or X, in the free chain
slots. With `cue`, the trial begins when the token just chosen ends a step, and takes its place
(DEER's answer inducer replaces its "Wait"); that token is the one recorded. A confident trial
(mean probability of the answer tokens at least `threshold`, or mean entropy at most it; with
`complete`, only an answer that ended) ends the row with the chain so far plus marker and answer
(reason 'early'); otherwise the trial's slots are freed and the chain resumes from the token recorded before it,
exactly as if no trial had run.

KV eviction (H2O / R-KV / StreamingLLM, by `EVICTION_SCORERS`). A row keeps at most `budget`
chain tokens in its cache: after each chain step over budget, the lowest-priority chain token
not among the last `window` is dropped (its slot freed for the next token; positions stay as
generated). The prompt is never evicted, nor anything during a trial (a rejected trial must find
the cache as it left it). The cache then holds T + budget + 1 + X slots a row, not T + N + X.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcot.generate.eviction import EVICTION_SCORERS, EVICTION_STATE, EvictionStep
from jaxcot.generate.sampler import (
    EARLY,
    EOS,
    LENGTH,
    PROMPT_BUCKET_STEPS,
    RUNNING,
    STOP,
    DecodeSpec,
    Sampler,
    check_prompts,
    decode_phases,
    left_pad,
    stream_seeds,
)
from jaxcot.generate.sampling import argmax, derive_row_keys, sample, token_stats
from jaxcot.generate.stop import StopPatterns, match_suffix, stop_patterns
from jaxcot.models.decoder import Decoder, KVCache
from jaxcot.programs import TreeSignature
from jaxcot.shapes import bucket_length
from jaxcot.sharding import BATCH

Array = jax.Array

CRITERIA = ("probability", "entropy")


@dataclasses.dataclass(frozen=True)
class EarlyExitSpec:
    """A compiled early exit (hashable). boundary: token patterns that end a reasoning step (a
    trial follows the token that completes one); marker: the answer marker's ids, fed first;
    answer_tokens: at most this many greedy answer tokens; answer_end: ids that end the answer
    sooner (kept in the output, not in the confidence); threshold and criterion ('probability':
    mean probability of the answer tokens >= threshold; 'entropy': their mean entropy, nats, <=
    threshold) with `agree` (the last `agree` trials of the row gave the same answer: Dynasor-CoT's
    consistency); min_tokens: no trial before this many chain tokens; cue: the trial replaces the
    token that completes the boundary (fed only if the trial is rejected) rather than following the
    chain token after it; complete: only an answer that reached an answer end (or EOS) within
    `answer_tokens` can be confident."""

    boundary: StopPatterns
    marker: tuple[int, ...]
    answer_tokens: int
    answer_end: tuple[int, ...]
    threshold: float
    criterion: str = "probability"
    agree: int = 1
    min_tokens: int = 0
    cue: bool = False
    complete: bool = False

    def __post_init__(self):
        if self.agree < 1:
            raise ValueError(f"early exit agree must be >= 1, got {self.agree}")
        if not self.marker or self.answer_tokens < 1:
            raise ValueError("an early exit needs an answer marker and at least one answer token")
        if self.criterion not in CRITERIA:
            raise ValueError(f"early exit criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if not self.boundary.rows:
            raise ValueError("an early exit needs at least one step boundary pattern")

    @property
    def width(self) -> int:
        """X: the trial's tokens, marker and answer."""
        return len(self.marker) + self.answer_tokens


@dataclasses.dataclass(frozen=True)
class EvictionSpec:
    """A compiled KV eviction (hashable): at most `budget` chain tokens a row, the last `window`
    never evicted (window < budget), lowest `scorer` priority first (`EVICTION_SCORERS`)."""

    budget: int
    window: int = 16
    scorer: str = "attention"

    def __post_init__(self):
        if not 0 <= self.window < self.budget:
            raise ValueError(f"eviction needs 0 <= window < budget, got window {self.window}, budget {self.budget}")
        EVICTION_SCORERS.check(self.scorer)


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """Static settings of one engine program: the decode's (`DecodeSpec`), R `slots`, and the
    optional early exit and eviction."""

    decode: DecodeSpec
    slots: int
    early_exit: EarlyExitSpec | None = None
    eviction: EvictionSpec | None = None

    @property
    def trial_width(self) -> int:
        return self.early_exit.width if self.early_exit is not None else 0

    @property
    def chain_slots(self) -> int:
        """C: cache slots a row's chain may occupy at once."""
        n = self.decode.max_new_tokens
        kept = n if self.eviction is None else min(self.eviction.budget + 1, n)
        return kept + self.trial_width


@flax.struct.dataclass
class EngineState:
    """The engine loop's carry. Per slot (R): `query` (the queue index served, -1 free), `busy`
    (decoding), `last` (the token to feed), `next_pos` (its position), `lengths`, `tokens` /
    `logprobs` / `entropy` [R, N], `reason`, `window` [R, W] (stop strings), `keys` (the
    prompt's PRNG key), `armed` (the token to feed ends a step), the trial's `trial`, `tpos`,
    `pending` (the chain token recorded before it), `trial_ids` / `trial_lp` / `trial_ent`
    [R, X], `snap_valid` [R, S] and `snap_pos` (the cache to go back to), `trials` (trials run),
    `answer` [R, X] and `streak` (the last trial's answer, -1 outside it, and how many trials in a
    row gave it),
    `exit_at` (column where a committed trial starts, -1), `peak` (most cache slots held),
    `running` [R, S, EVICTION_STATE] (the eviction scorer's carry). Per queued prompt (Q):
    the `out_*` results. `next_query` and `steps` (decode steps run) are scalars."""

    cache: KVCache
    query: Array
    busy: Array
    last: Array
    next_pos: Array
    lengths: Array
    tokens: Array
    logprobs: Array
    entropy: Array
    reason: Array
    window: Array
    keys: Array
    armed: Array
    trial: Array
    tpos: Array
    pending: Array
    trial_ids: Array
    trial_lp: Array
    trial_ent: Array
    snap_valid: Array
    snap_pos: Array
    trials: Array
    answer: Array
    streak: Array
    exit_at: Array
    peak: Array
    running: Array
    out_tokens: Array
    out_logprobs: Array
    out_entropy: Array
    out_lengths: Array
    out_reason: Array
    out_peak: Array
    out_trials: Array
    out_exit: Array
    next_query: Array
    steps: Array


def _put_rows(rows: Array, new, old):
    """Per-row select: new where rows [R] else old (same leading R axis)."""
    shape = rows.shape + (1,) * (jnp.ndim(old) - 1)
    return jnp.where(rows.reshape(shape), new, old)


def _ends_with(window: Array, table) -> Array:
    """`match_suffix` of the window's last columns against a table [P, W'] no wider than it."""
    return match_suffix(window[:, window.shape[1] - table.shape[1]:], table)


def _window_width(spec: EngineSpec) -> int:
    """The ids a row keeps for its stop strings and step boundaries."""
    ee = spec.early_exit
    return max(spec.decode.stop.width, ee.boundary.width if ee is not None else 1)


def _chain_region(s: EngineState, prompt_slots: int) -> Array:
    return jnp.arange(s.cache.max_len) >= prompt_slots  # [S]


def _choose(s: EngineState, logits: Array, rows: Array, spec: EngineSpec) -> EngineState:
    """Rows [R] pick their next chain token from logits [R, V] and record it (the static loop's
    `advance`, with each row at its own column)."""
    d = spec.decode
    n = d.max_new_tokens
    keys = s.keys if d.sampling.greedy else jax.vmap(jax.random.fold_in)(s.keys, s.lengths)
    tok = sample(logits, keys, d.sampling)
    logp, ent = token_stats(logits, tok)
    r = jnp.arange(s.lengths.shape[0])
    col = jnp.minimum(s.lengths, n - 1)
    tokens = s.tokens.at[r, col].set(jnp.where(rows, tok, s.tokens[r, col]))
    logprobs = s.logprobs.at[r, col].set(jnp.where(rows, logp, s.logprobs[r, col]))
    entropy = s.entropy.at[r, col].set(jnp.where(rows, ent, s.entropy[r, col]))
    lengths = s.lengths + rows.astype(jnp.int32)
    window = _put_rows(rows, jnp.concatenate([s.window[:, 1:], tok[:, None]], axis=1), s.window)
    is_eos = jnp.isin(tok, jnp.asarray(d.eos_ids, jnp.int32)) if d.eos_ids else jnp.zeros_like(rows)
    is_stop = _ends_with(window, d.stop.table)
    reason = jnp.where(is_eos, EOS, jnp.where(is_stop, STOP, jnp.where(lengths >= n, LENGTH, RUNNING)))
    ends = rows & (reason != RUNNING)
    armed = s.armed
    if spec.early_exit is not None:
        armed = _put_rows(rows, _ends_with(window, spec.early_exit.boundary.table), armed)
    return s.replace(tokens=tokens, logprobs=logprobs, entropy=entropy, lengths=lengths, window=window,
                     last=_put_rows(rows, tok, s.last), reason=_put_rows(ends, reason, s.reason),
                     busy=s.busy & ~ends, armed=armed)


def _begin_trial(s: EngineState, logits: Array, start: Array, spec: EngineSpec) -> EngineState:
    """Rows `start` [R] (their chain token just recorded) feed the answer marker next."""
    ee = spec.early_exit
    first = jnp.full(start.shape, ee.marker[0], jnp.int32)
    lp, ent = token_stats(logits, first)
    col0 = (jnp.arange(ee.width) == 0)[None]
    return s.replace(
        trial=s.trial | start, tpos=_put_rows(start, 0, s.tpos), pending=_put_rows(start, s.last, s.pending),
        last=_put_rows(start, first, s.last),
        trial_ids=_put_rows(start, jnp.where(col0, first[:, None], 0), s.trial_ids),
        trial_lp=_put_rows(start, jnp.where(col0, lp[:, None], 0.0), s.trial_lp),
        trial_ent=_put_rows(start, jnp.where(col0, ent[:, None], 0.0), s.trial_ent),
        snap_valid=_put_rows(start, s.cache.valid, s.snap_valid), snap_pos=_put_rows(start, s.next_pos, s.snap_pos),
        trials=s.trials + start.astype(jnp.int32))


def _trial_step(s: EngineState, logits: Array, rows: Array, spec: EngineSpec) -> EngineState:
    """Rows [R] in a trial: the next marker token, or a greedy answer token; at the answer's end,
    commit (the row ends with chain + trial) or go back to the chain."""
    ee = spec.early_exit
    m, x, n = len(ee.marker), ee.width, spec.decode.max_new_tokens
    j = s.tpos + 1
    greedy = argmax(logits)  # a trial answers greedily, whatever the chain's sampling
    marker = jnp.asarray(ee.marker, jnp.int32)
    nxt = jnp.where(j < m, marker[jnp.minimum(j, m - 1)], greedy)
    lp, ent = token_stats(logits, nxt)
    at = jnp.arange(x)[None] == jnp.minimum(j, x - 1)[:, None]  # [R, X]
    put = rows[:, None] & at
    trial_ids = jnp.where(put, nxt[:, None], s.trial_ids)
    trial_lp = jnp.where(put, lp[:, None], s.trial_lp)
    trial_ent = jnp.where(put, ent[:, None], s.trial_ent)
    ends_answer = jnp.isin(greedy, jnp.asarray(ee.answer_end, jnp.int32)) if ee.answer_end else jnp.zeros_like(rows)
    decide = rows & (j >= m) & (ends_answer | (j >= x - 1))
    cols = jnp.arange(x)[None]
    last_scored = jnp.where(ends_answer & (j > m), j - 1, j)
    scored = (cols >= m) & (cols <= last_scored[:, None])
    count = jnp.maximum(jnp.sum(scored, axis=1), 1)
    answer = jnp.where((cols >= m) & (cols <= j[:, None]), trial_ids, -1)
    streak = jnp.where(jnp.all(answer == s.answer, axis=1), s.streak + 1, 1)
    if ee.criterion == "probability":
        confident = jnp.sum(jnp.where(scored, jnp.exp(trial_lp), 0.0), axis=1) / count >= ee.threshold
    else:
        confident = jnp.sum(jnp.where(scored, trial_ent, 0.0), axis=1) / count <= ee.threshold
    confident = confident & (streak >= ee.agree)
    if ee.complete:  # an answer still going at X tokens is no answer
        confident = confident & ends_answer
    commit, back = decide & confident, decide & ~confident
    # A committed trial replaces the pending chain token: columns lengths - 1 .. lengths - 1 + j.
    start = s.lengths - 1
    c = jnp.arange(n)[None] - start[:, None]  # [R, N]
    inside = commit[:, None] & (c >= 0) & (c <= j[:, None])
    ci = jnp.clip(c, 0, x - 1)
    tokens = jnp.where(inside, jnp.take_along_axis(trial_ids, ci, axis=1), s.tokens)
    logprobs = jnp.where(inside, jnp.take_along_axis(trial_lp, ci, axis=1), s.logprobs)
    entropy = jnp.where(inside, jnp.take_along_axis(trial_ent, ci, axis=1), s.entropy)
    cache = s.cache.replace(valid=_put_rows(back, s.snap_valid, s.cache.valid))
    going = rows & ~decide
    return s.replace(
        cache=cache, tokens=tokens, logprobs=logprobs, entropy=entropy,
        trial_ids=trial_ids, trial_lp=trial_lp, trial_ent=trial_ent,
        answer=_put_rows(decide, answer, s.answer), streak=_put_rows(decide, streak, s.streak),
        lengths=_put_rows(commit, s.lengths + j, s.lengths),
        reason=_put_rows(commit, EARLY, s.reason), busy=s.busy & ~commit,
        exit_at=_put_rows(commit, start, s.exit_at),
        trial=s.trial & ~decide, tpos=_put_rows(going, j, s.tpos),
        next_pos=_put_rows(back, s.snap_pos, s.next_pos),
        last=_put_rows(going, nxt, _put_rows(back, s.pending, s.last)))


def _evict(s: EngineState, attention: tuple[Array, ...], written: Array, rows: Array, spec: EngineSpec,
           prompt_slots: int) -> EngineState:
    """Update the eviction scores of rows [R]; each over budget drops its lowest-priority chain
    token outside the last `window`. attention: per layer [R, K, G, 1, S + 1]."""
    ev = spec.eviction
    size = s.cache.max_len
    own = jax.nn.one_hot(written, size)

    def to_slots(p):  # [R, S + 1] -> [R, S]: the last column is the token written this step
        return p[:, :size] + own * p[:, size:]

    per_layer = [a[:, :, :, 0, :].astype(jnp.float32) for a in attention]  # [R, K, G, S + 1] each
    received = to_slots(sum(jnp.mean(a, axis=(1, 2)) for a in per_layer) / len(per_layer))
    peak = to_slots(functools.reduce(jnp.maximum, [jnp.max(a, axis=(1, 2)) for a in per_layer]))
    keys = jnp.mean(s.cache.k[-1].astype(jnp.float32), axis=1).transpose(0, 2, 1)  # [R, S, Dh]
    step = EvictionStep(attention=received, attention_max=peak, keys=keys, written=written, valid=s.cache.valid,
                        pos=s.cache.pos)
    running, priority = EVICTION_SCORERS.get(ev.scorer)(s.running, step)
    running = _put_rows(rows, running, s.running)
    chain = s.cache.valid & _chain_region(s, prompt_slots)[None]
    over = rows & (jnp.sum(chain, axis=1) > ev.budget)
    may = chain & (s.cache.pos < (s.next_pos - ev.window)[:, None])
    victim = jnp.argmin(jnp.where(may, priority, jnp.inf), axis=1)
    r = jnp.arange(rows.shape[0])
    valid = s.cache.valid.at[r, victim].set(jnp.where(over, False, s.cache.valid[r, victim]))
    return s.replace(cache=s.cache.replace(valid=valid), running=running)


def _harvest(s: EngineState) -> EngineState:
    """Rows that ended hand their outputs to their queue index and free their slot (a branch
    taken only on the steps where one did: the copy reads every row's [N] outputs)."""
    finished = (s.query >= 0) & ~s.busy

    def hand_over(s: EngineState) -> EngineState:
        idx = jnp.where(finished, s.query, s.out_lengths.shape[0])  # out of range: dropped
        put = lambda out, val: out.at[idx].set(val, mode="drop")  # noqa: E731
        return s.replace(
            out_tokens=put(s.out_tokens, s.tokens), out_logprobs=put(s.out_logprobs, s.logprobs),
            out_entropy=put(s.out_entropy, s.entropy), out_lengths=put(s.out_lengths, s.lengths),
            out_reason=put(s.out_reason, s.reason), out_peak=put(s.out_peak, s.peak),
            out_trials=put(s.out_trials, s.trials), out_exit=put(s.out_exit, s.exit_at),
            query=jnp.where(finished, -1, s.query))

    return jax.lax.cond(jnp.any(finished), hand_over, lambda s: s, s)


def _grow(s: EngineState, size: int) -> EngineState:
    """The state with every row's cache (and what is kept per cache slot) grown to `size` slots."""
    extra = size - s.cache.max_len
    pad = lambda x, axis: jnp.pad(x, [(0, extra) if a == axis else (0, 0) for a in range(x.ndim)])  # noqa: E731
    cache = s.cache.replace(k=tuple(pad(k, 3) for k in s.cache.k), v=tuple(pad(v, 2) for v in s.cache.v),
                            pos=pad(s.cache.pos, 1), valid=pad(s.cache.valid, 1))
    running = pad(s.running, 1) if s.running.shape[1] else s.running
    return s.replace(cache=cache, snap_valid=pad(s.snap_valid, 1), running=running)


def cache_tiers(spec: EngineSpec, phases: int = 4, min_room: int = 128) -> tuple[int, ...]:
    """The chain slots a row's cache holds in each tier of a run, the last `spec.chain_slots`.

    As the static loop's cache grows in phases (`decode_phases`), the engine's grows in tiers:
    attention reads every slot, so a cache sized for the longest chain would read the empty slots
    of every shorter one. All rows move up a tier when one of them has no free chain slot left; a
    tier never shrinks within a run (a queue's long rows come at any time). Figures:
    docs/performance.md, its jaxcot/generate/engine.py section."""
    phases_ = decode_phases(spec.chain_slots, phases, min_room=min_room)
    return tuple(c for c in phases_[:-1] if c < spec.chain_slots) + (spec.chain_slots,)


@flax.struct.dataclass
class _Queue:
    """The prompts waiting, as the program takes them: tokens / mask [Q, T] (left-padded), bucket
    [Q] (each prompt's index into the prefill lengths), seeds [Q] (stream seeds), the run's `seed`
    and `count` (the real prompts among the Q)."""

    tokens: Array
    mask: Array
    bucket: Array
    seeds: Array
    seed: Array
    count: Array


def _empty_state(model: Decoder, spec: EngineSpec, queue: _Queue, size: int, cache_dtype) -> EngineState:
    """Every slot free, every result empty: R rows of `size` cache slots, Q results."""
    d, r = spec.decode, spec.slots
    n, q, x = d.max_new_tokens, queue.tokens.shape[0], max(spec.trial_width, 1)
    f32 = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
    i32 = lambda *shape, v=0: jnp.full(shape, v, jnp.int32)  # noqa: E731
    return EngineState(
        cache=KVCache.init(model.config, r, size, cache_dtype), query=i32(r, v=-1), busy=jnp.zeros(r, bool),
        last=i32(r, v=d.pad_id), next_pos=i32(r), lengths=i32(r), tokens=i32(r, n, v=d.pad_id),
        logprobs=f32(r, n), entropy=f32(r, n), reason=i32(r), window=i32(r, _window_width(spec), v=-1),
        keys=derive_row_keys(queue.seed, jnp.zeros(r, jnp.uint32)), armed=jnp.zeros(r, bool),
        trial=jnp.zeros(r, bool), tpos=i32(r), pending=i32(r), trial_ids=i32(r, x), trial_lp=f32(r, x),
        trial_ent=f32(r, x), snap_valid=jnp.zeros((r, size), bool), snap_pos=i32(r), trials=i32(r),
        answer=i32(r, x, v=-1), streak=i32(r), exit_at=i32(r, v=-1), peak=i32(r),
        running=f32(r, size, EVICTION_STATE) if spec.eviction is not None else f32(r, 0, 0),
        out_tokens=i32(q, n, v=d.pad_id), out_logprobs=f32(q, n), out_entropy=f32(q, n), out_lengths=i32(q),
        out_reason=i32(q), out_peak=i32(q), out_trials=i32(q), out_exit=i32(q, v=-1), next_query=i32(), steps=i32())


def _prefill(model: Decoder, queue: _Queue, length: int, qi: Array, cache_dtype):
    """The prompt at queue index qi, prefilled over its last `length` slots (its own bucket): keys
    [1, K, Dh, T] and values [1, K, T, Dh] per layer, positions and validity [1, T] (left-padded to
    T), logits [1, V]."""
    t = queue.tokens.shape[1]
    toks = jax.lax.dynamic_slice(queue.tokens, (qi, t - length), (1, length))
    mask = jax.lax.dynamic_slice(queue.mask, (qi, t - length), (1, length))
    out = model.prefill(toks, KVCache.init(model.config, 1, length, cache_dtype), mask=mask,
                        logits_at=jnp.full((1,), length - 1, jnp.int32), read_slots=0)
    c, left = out.cache, t - length
    return (tuple(jnp.pad(k, ((0, 0), (0, 0), (0, 0), (left, 0))) for k in c.k),
            tuple(jnp.pad(v, ((0, 0), (0, 0), (left, 0), (0, 0))) for v in c.v),
            jnp.pad(c.pos, ((0, 0), (left, 0))), jnp.pad(c.valid, ((0, 0), (left, 0))), out.logits[:, 0])


def _insert(model: Decoder, s: EngineState, queue: _Queue, spec: EngineSpec, prefill_lengths: tuple[int, ...],
            cache_dtype) -> EngineState:
    """Prefill the next queued prompt into the first free slot and choose its first token."""
    r, t = spec.slots, queue.tokens.shape[1]
    slot = jnp.argmax(s.query < 0)
    qi = s.next_query
    # One prefill program per prompt bucket in the queue: a prompt pays for its own length
    # (docs/performance.md, its jaxcot/generate/engine.py section).
    branches = [functools.partial(_prefill, model, queue, n, cache_dtype=cache_dtype) for n in prefill_lengths]
    new_k, new_v, new_pos, new_valid, first = jax.lax.switch(queue.bucket[qi], branches, qi)
    # The prompt's T slots are written; the row's chain slots keep what the last prompt left there,
    # marked invalid.
    rest = s.cache.max_len - t
    cache = s.cache.replace(
        k=tuple(jax.lax.dynamic_update_slice(a, b.astype(a.dtype), (slot, 0, 0, 0)) for a, b in zip(s.cache.k, new_k)),
        v=tuple(jax.lax.dynamic_update_slice(a, b.astype(a.dtype), (slot, 0, 0, 0)) for a, b in zip(s.cache.v, new_v)),
        pos=jax.lax.dynamic_update_slice(s.cache.pos, jnp.pad(new_pos, ((0, 0), (0, rest))), (slot, 0)),
        valid=jax.lax.dynamic_update_slice(s.cache.valid, jnp.pad(new_valid, ((0, 0), (0, rest))), (slot, 0)))
    row = jnp.arange(r) == slot
    held = jnp.sum(new_valid, dtype=jnp.int32)
    key = derive_row_keys(queue.seed, jax.lax.dynamic_slice(queue.seeds, (qi,), (1,)))
    s = s.replace(
        cache=cache, query=_put_rows(row, qi, s.query), busy=s.busy | row, next_pos=_put_rows(row, held, s.next_pos),
        lengths=_put_rows(row, 0, s.lengths), tokens=_put_rows(row, spec.decode.pad_id, s.tokens),
        logprobs=_put_rows(row, 0.0, s.logprobs), entropy=_put_rows(row, 0.0, s.entropy),
        reason=_put_rows(row, RUNNING, s.reason), window=_put_rows(row, -1, s.window), keys=_put_keys(row, key, s.keys),
        armed=s.armed & ~row, trial=s.trial & ~row, trials=_put_rows(row, 0, s.trials),
        answer=_put_rows(row, -1, s.answer), streak=_put_rows(row, 0, s.streak),
        exit_at=_put_rows(row, -1, s.exit_at), peak=_put_rows(row, held, s.peak),
        running=_put_rows(row, 0.0, s.running), next_query=qi + 1)
    logits = jnp.zeros((r, first.shape[-1]), jnp.float32).at[slot].set(first[0])
    return _harvest(_choose(s, logits, row, spec))


def _step(model: Decoder, s: EngineState, spec: EngineSpec, prompt_slots: int) -> EngineState:
    """One decode step of every busy row: feed, write its own slot, then choose (chain rows), evict,
    and run or begin trials (early exit); rows that ended hand their outputs over."""
    slot = jnp.argmax(~s.cache.valid & _chain_region(s, prompt_slots)[None], axis=1)
    out = model.decode_rows(s.last, s.cache, slot, s.next_pos, keep_attention=spec.eviction is not None)
    moving = s.busy
    cache = out.cache.replace(valid=_put_rows(moving, out.cache.valid, s.cache.valid),
                              pos=_put_rows(moving, out.cache.pos, s.cache.pos))
    held = jnp.sum(cache.valid, axis=1, dtype=jnp.int32)
    s = s.replace(cache=cache, next_pos=s.next_pos + moving.astype(jnp.int32), steps=s.steps + 1,
                  peak=jnp.where(moving, jnp.maximum(s.peak, held), s.peak))
    logits = out.logits[:, 0]
    in_trial = moving & s.trial
    chain = moving & ~s.trial
    ee = spec.early_exit
    if ee is not None:  # rows whose trial would begin now, had they room: at lengths - 1 .. + X - 1
        might = chain & (s.lengths + ee.width - 1 <= spec.decode.max_new_tokens) & (s.lengths >= ee.min_tokens)
        start = might & s.armed  # the token just fed ended a step; the one chosen now waits
    s = _choose(s, logits, chain, spec)
    if ee is not None and ee.cue:  # the token just chosen ends a step: the trial takes its place
        start = might & s.armed
    if spec.eviction is not None:
        s = _evict(s, out.attention, slot, chain, spec, prompt_slots)
    if ee is not None:
        s = _trial_step(s, logits, in_trial, spec)
        s = _begin_trial(s, logits, start & s.busy, spec)
    return _harvest(s)


def make_engine(graphdef, spec: EngineSpec, mesh, cache_dtype, prefill_lengths: tuple[int, ...],
                tiers: tuple[int, ...] | None = None):
    """run(params, tokens [Q, T] int32, mask [Q, T] bool, buckets [Q] int32, row_seeds [Q] uint32,
    seed [] uint32, count [] int32) -> (tokens [Q, N], logprobs [Q, N], entropy [Q, N], lengths [Q], reason
    [Q], peak [Q], trials [Q], exit_at [Q], steps []), jitted: the first `count` queued prompts
    through R slots (module docstring). A prompt is prefilled over its last
    prefill_lengths[buckets[q]] slots (static lengths, the last = T). tiers: the chain slots of
    each tier of the cache (`cache_tiers`; default one tier of spec.chain_slots)."""
    tiers = tiers or (spec.chain_slots,)
    r = spec.slots

    def constrain(x):
        if x.ndim == 0 or x.shape[0] != r:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(BATCH, *([None] * (x.ndim - 1)))))

    def run(params, q_tokens, q_mask, q_bucket, q_seeds, seed, count):
        model: Decoder = nnx.merge(graphdef, params)
        queue = _Queue(q_tokens, q_mask, q_bucket, q_seeds, seed, count)
        t = q_tokens.shape[1]

        def refill(s: EngineState) -> EngineState:
            return jax.lax.while_loop(lambda s: jnp.any(s.query < 0) & (s.next_query < count),
                                      lambda s: _insert(model, s, queue, spec, prefill_lengths, cache_dtype), s)

        def body(s: EngineState) -> EngineState:
            return jax.tree_util.tree_map(constrain, refill(_step(model, s, spec, t)))

        def going(s: EngineState) -> Array:
            return jnp.any(s.busy) | (s.next_query < count)

        def roomy(s: EngineState) -> Array:  # every decoding row has a free chain slot for its next token
            free = ~s.cache.valid & _chain_region(s, t)[None]
            return jnp.all(jnp.any(free, axis=1) | ~s.busy)

        s = refill(jax.tree_util.tree_map(constrain, _empty_state(model, spec, queue, t + tiers[0], cache_dtype)))
        for i, cap in enumerate(tiers):
            if i:
                s = jax.tree_util.tree_map(constrain, _grow(s, t + cap))
            last = i == len(tiers) - 1
            s = jax.lax.while_loop(going if last else (lambda s: going(s) & roomy(s)), body, s)
        return (s.out_tokens, s.out_logprobs, s.out_entropy, s.out_lengths, s.out_reason, s.out_peak, s.out_trials,
                s.out_exit, s.steps)

    return jax.jit(run)


def _put_keys(row: Array, key: Array, keys: Array) -> Array:
    """keys [R] PRNG keys with those of rows [R] replaced by key [1]."""
    data = jax.random.key_data(keys)
    new = jax.random.key_data(key)
    return jax.random.wrap_key_data(_put_rows(row, jnp.broadcast_to(new, data.shape), data),
                                    impl=jax.random.key_impl(keys))


@dataclasses.dataclass(frozen=True)
class EngineProgramKey:
    """Everything static an engine program is built for (its `ProgramCache` key)."""

    graphdef: object
    params: TreeSignature
    mesh: object
    cache_dtype: str
    spec: EngineSpec
    queue: int
    prefill_lengths: tuple[int, ...]
    tiers: tuple[int, ...]


@dataclasses.dataclass
class EngineOutput:
    """Host-side results per prompt (numpy), in the order given: tokens / logprobs / entropy
    [Q, N], lengths [Q], reason [Q] (`FINISH_REASONS` codes, 'early' included), peak [Q] (most
    cache slots the prompt's row held: prompt + chain + trial), trials [Q] (early-exit trials
    run), exit_at [Q] (the column where a committed trial's marker starts, -1 none), and `steps`
    (decode steps of the whole run)."""

    tokens: np.ndarray
    logprobs: np.ndarray
    entropy: np.ndarray
    lengths: np.ndarray
    reason: np.ndarray
    peak: np.ndarray
    trials: np.ndarray
    exit_at: np.ndarray
    steps: int


# The queue's length is padded to this grid (two lengths per octave) so that a few programs
# serve calls of any size.
QUEUE_MIN = 8


class SlotEngine:
    """Runs prompts through an `EngineSpec`'s compiled loop with a `Sampler`'s model, mesh and
    program cache (its fused or quantized weights included)."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def run(self, prompts: Sequence[Sequence[int]], spec: EngineSpec, *, seed: int = 0,
            row_seeds: Sequence[int] | None = None) -> EngineOutput:
        """Generate for token-id prompts (each non-empty) with spec.slots rows decoding at once.
        row_seeds [len(prompts)] pick each prompt's random stream (default 0..n-1)."""
        smp = self.sampler
        check_prompts(prompts)
        n = len(prompts)
        m = smp.batch_multiple
        if spec.slots % m:
            raise ValueError(f"slots ({spec.slots}) must be a multiple of the mesh's {m} batch shards")
        own = [bucket_length(len(p), smp.min_bucket, PROMPT_BUCKET_STEPS) for p in prompts]
        lengths = tuple(sorted(set(own)))
        t = lengths[-1]
        q = bucket_length(n, QUEUE_MIN, PROMPT_BUCKET_STEPS)
        smp.check_fits(spec.slots, t, spec.chain_slots)
        tokens, mask = left_pad(prompts, q, t, spec.decode.pad_id)
        buckets = np.zeros(q, np.int32)
        buckets[:n] = [lengths.index(b) for b in own]
        seeds = stream_seeds(row_seeds, n, q)
        args = (tokens, mask, buckets, seeds, np.uint32(seed % (1 << 32)), np.int32(n))
        tiers = cache_tiers(spec, smp.decode_phases, smp.min_phase_room)
        key = EngineProgramKey(smp.graphdef, TreeSignature.of(smp.params), smp.mesh,
                               jnp.dtype(smp.cache_dtype).name, spec, q, lengths, tiers)

        def build():
            start = time.perf_counter()
            program = make_engine(smp.graphdef, spec, smp.mesh, smp.cache_dtype, lengths, tiers).lower(
                smp.params, *args).compile()
            smp.compile_seconds += time.perf_counter() - start
            return program

        out = smp._programs.get_or_compile(key, build)(smp.params, *args)
        tok, lp, ent, lengths, reason, peak, trials, exit_at, steps = jax.device_get(out)
        return EngineOutput(tok[:n], lp[:n], ent[:n], lengths[:n], reason[:n], peak[:n], trials[:n], exit_at[:n],
                            int(steps))


__all__ = ["CRITERIA", "EarlyExitSpec", "EngineOutput", "EngineProgramKey", "EngineSpec", "EngineState",
           "EvictionSpec", "QUEUE_MIN", "SlotEngine", "cache_tiers", "engine_spec", "make_engine"]


def engine_spec(cfg, decode: DecodeSpec, tokenizer, slot_multiple: int = 1) -> EngineSpec:
    """The `EngineSpec` of an `EngineConfig` (`jaxcot.generate.config`) for a decode and a
    tokenizer: the early exit's strings become token ids (the boundary and answer ends by their
    known tokenizations, `stop_patterns`; an answer end must be one token in some context; the
    EOS ids always end an answer), slots round up to `slot_multiple`."""
    early = None
    ee = cfg.early_exit
    if ee.enabled:
        if tokenizer is None:
            raise ValueError("an early exit needs a tokenizer (its boundary and answer marker are text)")
        ends = tuple(dict.fromkeys(r[0] for r in stop_patterns(tokenizer, ee.answer_end).rows if len(r) == 1))
        missing = [e for e in ee.answer_end if not any(e == tokenizer.decode([i]) for i in ends)]
        if missing:
            raise ValueError(f"early_exit.answer_end {missing} is not one token for this tokenizer")
        early = EarlyExitSpec(
            boundary=stop_patterns(tokenizer, ee.boundary),
            marker=tuple(tokenizer.encode(ee.marker, add_special_tokens=False)),
            answer_tokens=ee.answer_tokens, answer_end=ends + tuple(decode.eos_ids), threshold=float(ee.threshold),
            criterion=ee.criterion, agree=ee.agree, min_tokens=ee.min_tokens, cue=ee.cue,
            complete=ee.complete)
    ev = cfg.eviction
    eviction = EvictionSpec(ev.budget, ev.window, ev.scorer) if ev.budget else None
    slots = -(-cfg.slots // slot_multiple) * slot_multiple
    return EngineSpec(decode=decode, slots=slots, early_exit=early, eviction=eviction)
