"""The compiled sampler: one jitted prefill, then a `jax.lax.while_loop` over decode steps.

Shapes: B rows (padded to a multiple of the mesh's batch axes), T prompt slots (the longest prompt
rounded up to 2^k or 1.5 * 2^k: a dataset compiles a handful of programs), N = max_new_tokens,
S = T + N cache slots, V vocabulary, W stop-pattern width; with packing, G row groups (one per
device along the batch axes), M packed rows per group of P slots each.

Prompts are left-padded, so every row's last prompt token sits in slot T - 1 and all rows decode
in lockstep into slots T, T+1, ...; the decoder derives each row's RoPE positions from its own
count of valid slots. The loop state (`DecodeState`, holding the `KVCache`) is an explicit pytree
sharded over the batch axes, updated in place by the loop. `Sampler` runs prefill and decode as
one compiled program that returns only what the host reads (`make_generate`), sparing a second
program launch and the cache's hand-over, a fixed cost of every batch-1 call.

Prompts of mixed lengths are prefilled *packed* (`plan_packing`): each device's rows are laid end
to end in M rows of P slots, attending within their own prompt only, and the keys and values are
then gathered into the left-padded cache. The prefill's cost follows the prompts' total length
rather than B x T, which pays where a batch's prompt lengths differ (docs/performance.md).

The cache grows in up to four phases (`decode_phases`), one while-loop each: attention reads all
of the cache's slots every step, so a cache sized for the whole run would read the empty ones too.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcot.generate.config import QUANTIZE, SamplingConfig
from jaxcot.generate.sampling import derive_row_keys, sample, step_keys, token_stats
from jaxcot.generate.stop import StopPatterns, match_suffix
from jaxcot.models.decoder import Decoder, KVCache, fuse_for_decoding, quantize_int8
from jaxcot.models.params import param_bytes
from jaxcot.programs import ProgramCache, TreeSignature
from jaxcot.runtime import device_memory_bytes
from jaxcot.shapes import bucket_length
from jaxcot.sharding import BATCH, batch_shards, make_mesh

Array = jax.Array

RUNNING, EOS, STOP, LENGTH, EARLY = 0, 1, 2, 3, 4  # EARLY: an early exit took a trial answer (`engine`)
# Parameters of at least this many bytes do not stay in a CPU's caches: decoding streams them
# from memory, which fused [out, in] projections do faster. Smaller models run from cache,
# compute-bound, where the fused layout is slower. The threshold sits between the models measured
# either way (docs/performance.md, its jaxcot/generate/sampler.py section).
FUSE_MIN_BYTES = 64 << 20
FINISH_REASONS = {RUNNING: "running", EOS: "eos", STOP: "stop", LENGTH: "length", EARLY: "early"}
# A batch someone watches decodes in chunks of about this many seconds (the host reads its progress
# between them), the first of PROGRESS_FIRST_STEPS steps: long enough that a chunk's fixed cost (a
# program launch and a read-back) is a small share of it, short enough for a live progress bar.
PROGRESS_SECONDS = 0.25
PROGRESS_FIRST_STEPS = 8


@flax.struct.dataclass
class DecodeState:
    """Everything the decode loop carries. Per row: the token to feed next `last` [B], generated
    ids `tokens` [B, N] (pad after a row ends), the model's log-probability of each chosen token
    `logprobs` [B, N] and the predictive entropy `entropy` [B, N] (float32, nats), `lengths` [B]
    (generated tokens, counting the EOS / stop-completing token), `done` [B], `reason` [B]
    (RUNNING/EOS/STOP/LENGTH), `window` [B, W] (last W ids, for stop strings), `keys` [B] PRNG
    keys; and `step` (scalar: columns written) and the `cache`."""

    cache: KVCache
    last: Array
    tokens: Array
    logprobs: Array
    entropy: Array
    lengths: Array
    done: Array
    reason: Array
    window: Array
    keys: Array
    step: Array


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Static settings of one compiled program (hashable)."""

    max_new_tokens: int
    sampling: SamplingConfig
    eos_ids: tuple[int, ...]
    stop: StopPatterns
    pad_id: int


# A prompt's padded length is `jaxcot.shapes.bucket_length(n, minimum, PROMPT_BUCKET_STEPS)`: two
# grid lengths per octave (16, 24, 32, 48, 64, 96, ...). Prefill is a batch-1 call's main fixed
# cost, so padding is capped at a third of the bucket, while two programs per octave stay few.
PROMPT_BUCKET_STEPS = 2


def advance(state: DecodeState, logits: Array, spec: DecodeSpec) -> DecodeState:
    """Choose the next token of every running row from logits [B, V] and record it at column step."""
    keys = state.keys if spec.sampling.greedy else step_keys(state.keys, state.step)  # greedy draws nothing
    tok = sample(logits, keys, spec.sampling)
    logp, ent = token_stats(logits, tok)
    active = ~state.done
    col = state.step
    tok = jnp.where(active, tok, spec.pad_id)
    tokens = jax.lax.dynamic_update_slice(state.tokens, tok[:, None], (0, col))
    logprobs = jax.lax.dynamic_update_slice(state.logprobs, jnp.where(active, logp, 0.0)[:, None], (0, col))
    entropy = jax.lax.dynamic_update_slice(state.entropy, jnp.where(active, ent, 0.0)[:, None], (0, col))
    lengths = state.lengths + active.astype(jnp.int32)
    window = jnp.where(active[:, None], jnp.concatenate([state.window[:, 1:], tok[:, None]], axis=1), state.window)
    is_eos = jnp.isin(tok, jnp.asarray(spec.eos_ids, jnp.int32)) if spec.eos_ids else jnp.zeros_like(active)
    is_stop = match_suffix(window, spec.stop.table)
    new_reason = jnp.where(is_eos, EOS,
                           jnp.where(is_stop, STOP, jnp.where(lengths >= spec.max_new_tokens, LENGTH, RUNNING)))
    ends = active & (new_reason != RUNNING)
    return state.replace(
        last=tok,
        tokens=tokens,
        logprobs=logprobs,
        entropy=entropy,
        lengths=lengths,
        done=state.done | ends,
        reason=jnp.where(ends, new_reason, state.reason),
        window=window,
        step=col + 1,
    )


def _constrain(tree, mesh: Mesh):
    """Shard every leaf with a leading batch axis over (data, fsdp); scalars replicated."""

    def one(x):
        spec = P() if x.ndim == 0 else P(BATCH, *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(one, tree)


@dataclasses.dataclass(frozen=True)
class Packing:
    """Host arrays of a packed prefill (see `plan_packing`): tokens / mask / segments / positions
    [G*M, P] (segment = the row's index in its group, -1 on padding; positions restart at 0 in
    each prompt), and per batch row: `gather` [B, T], the index of each left-padded prompt slot
    in its group's M*P packed slots (0 on padding), `last` [B], that of its last prompt token.
    `per_group` is M."""

    tokens: np.ndarray
    mask: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    gather: np.ndarray
    last: np.ndarray
    per_group: int

    @property
    def shape(self) -> tuple[int, int]:
        """(M, P), static: part of the compiled program's key."""
        return self.per_group, self.tokens.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays the program takes (everything but `per_group`, which is in its shape)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_group"}


def plan_packing(tokens: np.ndarray, mask: np.ndarray, groups: int, *, min_bucket: int = 16,
                 capacity: int = 1024, pad_id: int = 0, max_fraction: float = 0.75) -> Packing | None:
    """Pack the left-padded prompts tokens / mask [B, T] for a packed prefill, or None when packing
    would not pay: one row per group, or packed slots above `max_fraction` of B x T.

    Rows b of group g = b // (B / groups) go end to end, in order, into packed rows of at most
    max(T, capacity) slots (a bound on the packed attention's [P, P] scores); P is the longest
    packed row rounded up like T (`bucket_length`, PROMPT_BUCKET_STEPS), M the most packed rows any
    group needs.
    """
    b, t = tokens.shape
    r = b // groups
    if r <= 1:
        return None
    lengths = mask.sum(1).astype(int)
    cap = max(t, capacity)
    fills, where = [], []  # per group: packed-row fills; per row: (packed row in group, offset)
    for g in range(groups):
        rows = [0]
        for i in range(g * r, (g + 1) * r):
            if rows[-1] + lengths[i] > cap:
                rows.append(0)
            where.append((len(rows) - 1, rows[-1]))
            rows[-1] += lengths[i]
        fills.append(rows)
    m = max(len(f) for f in fills)
    p = bucket_length(max(max(f) for f in fills), min_bucket, PROMPT_BUCKET_STEPS)
    if m * p > max_fraction * r * t:
        return None
    ptok = np.full((groups * m, p), pad_id, np.int32)
    pmask = np.zeros((groups * m, p), bool)
    pseg = np.full((groups * m, p), -1, np.int32)
    ppos = np.zeros((groups * m, p), np.int32)
    gather = np.zeros((b, t), np.int32)
    last = np.zeros(b, np.int32)
    for i in range(b):
        g, n = i // r, lengths[i]
        row, off = where[i]
        pr = g * m + row
        ptok[pr, off:off + n] = tokens[i, t - n:]
        pmask[pr, off:off + n] = True
        pseg[pr, off:off + n] = i - g * r
        ppos[pr, off:off + n] = np.arange(n)
        gather[i, t - n:] = row * p + off + np.arange(n)
        last[i] = row * p + off + n - 1
    return Packing(ptok, pmask, pseg, ppos, gather, last, m)


def balanced_order(lengths: np.ndarray, groups: int) -> np.ndarray:
    """A permutation of the B rows (lengths [B]) into `groups` contiguous blocks of B / groups rows
    with similar total length: longest first, each to the open block with the least so far."""
    b = len(lengths)
    r = b // groups
    blocks: list[list[int]] = [[] for _ in range(groups)]
    totals = np.zeros(groups)
    for i in sorted(range(b), key=lambda i: -int(lengths[i])):
        g = min((g for g in range(groups) if len(blocks[g]) < r), key=lambda g: totals[g])
        blocks[g].append(i)
        totals[g] += lengths[i]
    return np.asarray([i for blk in blocks for i in sorted(blk)], np.int64)


def _unpack_cache(packed: KVCache, gather: Array, groups: int, mask: Array, n_new: int) -> KVCache:
    """The packed prefill's cache ([G*M, ..., P] per layer) -> the left-padded cache [B, ..., T + n_new]
    of the decode loop. gather [B, T]: each prompt slot's index in its group's M*P packed slots."""
    b, t = gather.shape
    gm, p = packed.pos.shape
    m, r = gm // groups, b // groups
    idx = gather.reshape(groups, r * t)

    def keys(k):  # [G*M, K, Dh, P] -> [B, K, Dh, T]
        kk, dh = k.shape[1], k.shape[2]
        flat = k.reshape(groups, m, kk, dh, p).transpose(0, 2, 3, 1, 4).reshape(groups, kk, dh, m * p)
        out = jax.vmap(lambda a, i: jnp.take(a, i, axis=2))(flat, idx)
        return out.reshape(groups, kk, dh, r, t).transpose(0, 3, 1, 2, 4).reshape(b, kk, dh, t)

    def values(v):  # [G*M, K, P, Dh] -> [B, K, T, Dh]
        kk, dh = v.shape[1], v.shape[3]
        flat = v.reshape(groups, m, kk, p, dh).transpose(0, 2, 1, 3, 4).reshape(groups, kk, m * p, dh)
        out = jax.vmap(lambda a, i: jnp.take(a, i, axis=1))(flat, idx)
        return out.reshape(groups, kk, r, t, dh).transpose(0, 2, 1, 3, 4).reshape(b, kk, t, dh)

    prompt = KVCache(
        k=tuple(keys(k) for k in packed.k),
        v=tuple(values(v) for v in packed.v),
        pos=jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0),
        valid=mask,
        end=jnp.asarray(t, jnp.int32),
    )
    return _grow_cache(prompt, n_new)


def decode_phases(n: int, phases: int = 4, granule: int = 32, min_room: int = 128) -> tuple[int, ...]:
    """The new-token room of the decode cache in each phase: up to `phases` steps of about n /
    phases, each a multiple of `granule`, the last n - 1 (the last token is never fed back).

    Attention reads every slot of the cache, so a cache that grows in phases (one copy per phase)
    reads about 5/8 of the slots a full-size one does over a run of 4 phases; each phase compiles
    its own copy of the decode step, so a phase must have room for at least `min_room` tokens
    (a short decode runs in one phase: the slots it saves cost less than compiling the copy).
    """
    last = max(n - 1, 1)
    phases = max(1, min(phases, n // max(min_room, 1)))
    step = -(-n // (phases * granule)) * granule
    return tuple(c for c in range(step, last, step) if last - c >= granule // 2) + (last,)


def _grow_cache(cache: KVCache, extra: int) -> KVCache:
    """The cache with `extra` empty slots appended (keys [B,K,Dh,S], values [B,K,S,Dh])."""
    return cache.replace(
        k=tuple(jnp.pad(k, ((0, 0), (0, 0), (0, 0), (0, extra))) for k in cache.k),
        v=tuple(jnp.pad(v, ((0, 0), (0, 0), (0, extra), (0, 0))) for v in cache.v),
        pos=jnp.pad(cache.pos, ((0, 0), (0, extra))),
        valid=jnp.pad(cache.valid, ((0, 0), (0, extra))),
    )


def _program_parts(graphdef, spec: DecodeSpec, mesh: Mesh, cache_dtype, phases: int, min_room: int):
    """(prefill, run_phase, grow, capacities): the plain functions `make_programs` and
    `make_chunked` jit. run_phase(params, state, i, until=None) runs phase i's while-loop (to
    the phase's room, or to step `until`); grow(state, i) gives the cache phase i's room."""
    groups = batch_shards(mesh)
    capacities = decode_phases(spec.max_new_tokens, phases, min_room=min_room)

    def prefill_logits(model, tokens, mask, pack):
        """(cache [B, .., T + capacities[0]], logits [B, V]) of the prompts."""
        b, t = tokens.shape
        n = capacities[0]
        if pack is None:
            cache = _constrain(KVCache.init(model.config, b, t + n, cache_dtype), mesh)
            # The cache is empty: the prompt's attention reads its own T slots, not all T + N.
            out = model.prefill(tokens, cache, mask=mask, logits_at=jnp.full((b,), t - 1, jnp.int32), read_slots=0)
            return out.cache, out.logits[:, 0]
        gm, p = pack["tokens"].shape
        cache = _constrain(KVCache.init(model.config, gm, p, cache_dtype), mesh)
        out = model.prefill(pack["tokens"], cache, pack["positions"], pack["mask"], segments=pack["segments"],
                            read_slots=0, return_hidden=True, with_logits=False)
        h = out.hidden[-1].reshape(groups, (gm // groups) * p, -1)
        h_last = jnp.take_along_axis(h, pack["last"].reshape(groups, b // groups)[:, :, None], axis=1)
        logits = model.unembed(model.norm(h_last.reshape(b, -1)))
        return _constrain(_unpack_cache(out.cache, pack["gather"], groups, mask, n), mesh), logits

    def prefill(params, tokens, mask, seed, row_seeds, active, pack=None):
        model: Decoder = nnx.merge(graphdef, params)
        b, t = tokens.shape
        cache, logits = prefill_logits(model, tokens, mask, pack)
        n = spec.max_new_tokens
        state = DecodeState(
            cache=cache,
            last=jnp.full((b,), spec.pad_id, jnp.int32),
            tokens=jnp.full((b, n), spec.pad_id, jnp.int32),
            logprobs=jnp.zeros((b, n), jnp.float32),
            entropy=jnp.zeros((b, n), jnp.float32),
            lengths=jnp.zeros((b,), jnp.int32),
            done=~active,
            reason=jnp.zeros((b,), jnp.int32),
            window=jnp.full((b, spec.stop.width), -1, jnp.int32),
            keys=derive_row_keys(seed, row_seeds),
            step=jnp.zeros((), jnp.int32),
        )
        return _constrain(advance(state, logits, spec), mesh)

    def run_phase(params, state, i: int, until=None):
        model: Decoder = nnx.merge(graphdef, params)
        room = capacities[i]

        def body(s):
            out = model.decode_step(s.last, s.cache)
            return advance(s.replace(cache=out.cache), out.logits[:, 0], spec)

        def cond(s):  # the token fed at `step` goes to cache slot T + step - 1: this phase's cache holds steps <= room
            go = (s.step < spec.max_new_tokens) & (s.step <= room) & ~jnp.all(s.done)
            return go if until is None else go & (s.step < until)

        return _constrain(jax.lax.while_loop(cond, body, state), mesh)

    def grow(state, i: int):
        return _constrain(state.replace(cache=_grow_cache(state.cache, capacities[i] - capacities[i - 1])), mesh)

    return prefill, run_phase, grow, capacities


def make_programs(graphdef, spec: DecodeSpec, mesh: Mesh, cache_dtype, phases: int = 4, min_room: int = 128):
    """(prefill, decode) as jitted functions.

    prefill(params, tokens [B, T] int32, mask [B, T] bool, seed [] uint32, row_seeds [B] uint32,
      active [B] bool[, packed]) -> DecodeState: runs the prompt through the model, fills the
      cache, derives each row's PRNG key (`derive_row_keys`) and picks the first token. Given a
      `Packing`'s arrays as the last argument, the prompts run packed (tokens then only give
      the shape).
    decode(params, state) -> state: the while-loop until every row is done or N tokens are
      written; `state` is donated. The cache grows in `phases` (`decode_phases`): prefill makes
      it T + the first phase's room (`min_room`: see `decode_phases`).
    """
    prefill, run_phase, grow, capacities = _program_parts(graphdef, spec, mesh, cache_dtype, phases, min_room)

    def decode(params, state):
        for i in range(len(capacities)):
            state = run_phase(params, grow(state, i) if i else state, i)
        return state

    return jax.jit(prefill), jax.jit(decode, donate_argnums=(1,))


def progress_stats(state: DecodeState, max_new_tokens: int) -> Array:
    """[4] int32 of a decode under way: step, whether every row is done, tokens generated, and the
    budget used (a row counts its tokens while it runs and `max_new_tokens` once it ended; filler
    rows count nothing), which reaches rows x max_new_tokens when the batch ends."""
    ended = state.reason != RUNNING
    return jnp.stack([state.step, jnp.all(state.done).astype(jnp.int32), jnp.sum(state.lengths),
                      jnp.sum(jnp.where(ended, max_new_tokens, state.lengths))]).astype(jnp.int32)


def make_chunked(graphdef, spec: DecodeSpec, mesh: Mesh, cache_dtype, phases: int = 4, min_room: int = 128):
    """(prefill, grow, chunk, capacities): a decode the host runs in chunks, to report progress.

    prefill: as in `make_programs`. grow(state, i) -> state with phase i's cache (i >= 1, static;
    `state` donated). chunk(params, state, until [] int32, i) -> (state, `progress_stats` [4]):
    phase i's while-loop (i static) up to step `until` (a runtime value: one program serves every
    chunk length); `state` donated. The steps run as in `make_programs`' decode (same `advance`,
    same phases), so the tokens are the same. No host callback: the programs stay cacheable
    (JAX's persistent cache refuses programs with host callbacks).
    """
    prefill, run_phase, grow, capacities = _program_parts(graphdef, spec, mesh, cache_dtype, phases, min_room)

    def chunk(params, state, until, i):
        state = run_phase(params, state, i, until)
        return state, progress_stats(state, spec.max_new_tokens)

    return (jax.jit(prefill), jax.jit(grow, static_argnums=1),
            jax.jit(chunk, static_argnums=3, donate_argnums=1), capacities)


def make_generate(graphdef, spec: DecodeSpec, mesh: Mesh, cache_dtype, phases: int = 4, min_room: int = 128):
    """prefill then decode as one jitted function, returning only the host's outputs.

    generate(params, tokens [B, T], mask [B, T], seed [], row_seeds [B], active [B][, pack]) ->
    (tokens [B, N], logprobs [B, N], entropy [B, N], lengths [B], reason [B], step []); the KV
    cache never leaves the program. pack: a `Packing`'s arrays (a packed prefill); phases,
    min_room: see `make_programs`.
    """
    prefill, decode = make_programs(graphdef, spec, mesh, cache_dtype, phases, min_room)

    def generate(params, tokens, mask, seed, row_seeds, active, pack=None):
        s = decode(params, prefill(params, tokens, mask, seed, row_seeds, active, pack))
        return s.tokens, s.logprobs, s.entropy, s.lengths, s.reason, s.step

    return jax.jit(generate)


@dataclasses.dataclass
class ChunkedPrograms:
    """`make_chunked`'s jitted (prefill, grow, chunk) for one batch shape, each piece compiled when
    a batch first needs it (`compiled`: {'prefill' | 'grow<i>' | 'chunk<i>': executable}; a phase no
    batch reaches is never compiled), the phases' `capacities`, and `pace`, the decode steps per
    second of the last chunk run (None before the first), which sizes the next batch's first chunk."""

    jitted: tuple
    capacities: tuple[int, ...]
    compiled: dict = dataclasses.field(default_factory=dict)
    pace: float | None = None


def chunk_steps(pace: float | None, target: float | None = None) -> int:
    """Decode steps for the next chunk: those that fill `target` seconds (default PROGRESS_SECONDS)
    at `pace` steps per second, at least PROGRESS_FIRST_STEPS (all the pace unknown)."""
    target = PROGRESS_SECONDS if target is None else target
    return int(min(max((pace or 0.0) * target, PROGRESS_FIRST_STEPS), 1 << 20))


def check_prompts(prompts: Sequence[Sequence[int]]) -> None:
    """ValueError for no prompts or an empty one (named by its index)."""
    if len(prompts) == 0:
        raise ValueError("no prompts")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")


def left_pad(prompts: Sequence[Sequence[int]], rows: int, length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [rows, length] int32, mask [rows, length] bool): each prompt right-aligned in its
    row (its last token in slot length - 1), `pad_id` and False elsewhere and in the rows past
    the prompts."""
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), bool)
    for i, p in enumerate(prompts):
        tokens[i, length - len(p):] = p
        mask[i, length - len(p):] = True
    return tokens, mask


def stream_seeds(row_seeds: Sequence[int] | None, n: int, rows: int) -> np.ndarray:
    """[rows] uint32: the n prompts' random-stream seeds (default 0..n-1; mod 2^32), 0 after them."""
    seeds = np.zeros(rows, np.uint32)
    seeds[:n] = np.arange(n) if row_seeds is None else np.asarray(row_seeds, np.uint64) % (1 << 32)
    return seeds


@dataclasses.dataclass
class BatchOutput:
    """Host-side results of one batch (numpy): tokens [B, N], logprobs [B, N], entropy [B, N],
    lengths [B], reason [B] (codes, see FINISH_REASONS), steps (decode columns run)."""

    tokens: np.ndarray
    logprobs: np.ndarray
    entropy: np.ndarray
    lengths: np.ndarray
    reason: np.ndarray
    steps: int


def fuse_by_default(model: Decoder, mesh: Mesh) -> bool:
    """Whether `Sampler` fuses the model's projections unless told: on a CPU mesh, for parameters
    of at least FUSE_MIN_BYTES (memory-bound decoding)."""
    if mesh.devices.flat[0].platform != "cpu":
        return False
    return param_bytes(model) >= FUSE_MIN_BYTES


@dataclasses.dataclass(frozen=True)
class DecodeProgramKey:
    """Everything static a `Sampler`'s compiled program is built for (its `ProgramCache` key):
    the model's structure `graphdef` (fused or quantized layouts included), `params` (each
    parameter's shape, dtype and sharding: `TreeSignature`), the `mesh`, the KV cache's
    `cache_dtype` (a dtype name), `decode_phases` and `min_phase_room` (`decode_phases`), the
    `spec`, the prompts' padded shape `rows` x `slots` (B x T), the packed prefill's (M, P) shape
    `packed` (None: unpacked), and `chunked`: the host-driven chunks of `make_chunked` (a
    `ChunkedPrograms`) rather than `make_generate`'s single program."""

    graphdef: object
    params: TreeSignature
    mesh: Mesh
    cache_dtype: str
    decode_phases: int
    min_phase_room: int
    spec: DecodeSpec
    rows: int
    slots: int
    packed: tuple[int, int] | None
    chunked: bool = False


def _device_nbytes(x) -> int:
    """Bytes of one device's shard of array `x` (all of it when unsharded)."""
    shards = getattr(x, "addressable_shards", None)
    return int(shards[0].data.nbytes) if shards else int(np.asarray(x).nbytes)


class Sampler:
    """Runs batches of token-id prompts through compiled prefill + decode programs.

    model: a `Decoder` (parameters placed as the loader put them). mesh: batch rows are sharded
    over its (data, fsdp) axes (default: one device). Programs are compiled once per
    `DecodeProgramKey` (spec, batch, bucket, packed shape, ...) and kept; `compile_seconds` sums
    the time spent compiling. pack: prefill prompts of mixed lengths packed (`plan_packing`,
    packed rows of at most max(T, pack_capacity) slots) when that saves slots; off, every batch prefills its B x T
    left-padded slots. decode_phases: the KV cache grows in up to this many phases, each with
    room for at least min_phase_room tokens (`decode_phases`; 1 = full size from the start).
    fuse_weights: run a copy of the model with
    fused, [out, in] projections (`fuse_for_decoding`: faster few-row matmuls on CPU, at the cost
    of a second copy of the layers' weights); None = `fuse_by_default`. programs: a `ProgramCache`
    shared by samplers of models of one architecture (students of one base model), so that each
    program is compiled once for all of them (default: this sampler's own; a plain dict is taken
    as the store of a new cache). quantize: 'int8' runs a copy
    with int8 weight-only projections (`quantize_int8`); None keeps the model's weights.
    """

    def __init__(self, model: Decoder, *, mesh: Mesh | None = None, cache_dtype=None, min_bucket: int = 16,
                 pack: bool = True, pack_capacity: int = 1024, decode_phases: int = 4, min_phase_room: int = 128,
                 fuse_weights: bool | None = None, programs: ProgramCache | None = None,
                 quantize: str | None = None):
        self.mesh = mesh or make_mesh(devices=jax.local_devices()[:1])
        if fuse_weights is None:
            fuse_weights = fuse_by_default(model, self.mesh)
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
        self.fused = bool(fuse_weights)
        runs = fuse_for_decoding(model) if self.fused else model
        self.graphdef, self.params = nnx.split(quantize_int8(runs) if quantize == "int8" else runs)
        self.config = model.config
        self.cache_dtype = cache_dtype or model.dtype
        self.min_bucket = min_bucket
        self.pack = pack
        self.pack_capacity = pack_capacity
        self.decode_phases = decode_phases
        self.min_phase_room = min_phase_room
        self.compile_seconds = 0.0
        self._programs = programs if programs is not None else ProgramCache()
        self._params_signature = TreeSignature.of(self.params)
        self._param_device_bytes = sum(_device_nbytes(x) for x in jax.tree_util.tree_leaves(self.params))

    @property
    def batch_multiple(self) -> int:
        """Batches are padded to a multiple of the devices along the batch axes."""
        return batch_shards(self.mesh)

    def decode_bytes(self, rows: int, prompt_len: int, max_new_tokens: int) -> int:
        """A lower bound of what a batch's decode holds on one device: the KV cache (K and V of
        rows x (prompt_len + max_new_tokens) slots in every layer, its rows over the batch shards
        and its heads over the tensor axis), the per-token outputs (token, log-probability and
        entropy) and the device's share of the weights. XLA's temporaries come on top."""
        c = self.config
        itemsize = jnp.dtype(self.cache_dtype).itemsize
        cache = 2 * c.num_layers * rows * (prompt_len + max_new_tokens) * c.num_kv_heads * c.head_dim * itemsize
        split = self.batch_multiple * self.mesh.shape.get("tensor", 1)
        return cache // split + rows * max_new_tokens * 12 // self.batch_multiple + self._param_device_bytes

    def check_fits(self, rows: int, prompt_len: int, max_new_tokens: int) -> None:
        """ValueError, before anything compiles, when `decode_bytes` exceeds what a device holds
        (`jaxcot.runtime.device_memory_bytes`; on the host CPU, every simulated device shares the
        machine's memory)."""
        device = self.mesh.devices.flat[0]
        have = device_memory_bytes(device)
        need = self.decode_bytes(rows, prompt_len, max_new_tokens)
        on_host = device.platform == "cpu"
        need = need * self.mesh.devices.size if on_host else need
        if have is not None and need > have:
            raise ValueError(
                f"decoding {rows} rows of {prompt_len} prompt + {max_new_tokens} new tokens needs at least "
                f"{need / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB "
                f"{'of host memory' if on_host else 'a device holds'}: lower the batch size or max_new_tokens")

    def program_key(self, spec: DecodeSpec, args: tuple, packed: tuple[int, int] | None,
                    chunked: bool = False) -> DecodeProgramKey:
        """The key of the program that runs these (device) arguments (see `DecodeProgramKey`)."""
        b, t = args[0].shape
        return DecodeProgramKey(self.graphdef, self._params_signature, self.mesh, jnp.dtype(self.cache_dtype).name,
                                self.decode_phases, self.min_phase_room, spec, b, t, packed, chunked)

    def _compiled(self, spec: DecodeSpec, args: tuple, packed: tuple[int, int] | None):
        """The program for these (device) arguments' shapes, compiled on first use."""
        def build():
            generate = make_generate(self.graphdef, spec, self.mesh, self.cache_dtype, self.decode_phases,
                                     self.min_phase_room)
            start = time.perf_counter()
            program = generate.lower(self.params, *args).compile()
            self.compile_seconds += time.perf_counter() - start
            return program

        return self._programs.get_or_compile(self.program_key(spec, args, packed), build)

    def _chunked(self, spec: DecodeSpec, args: tuple, packed: tuple[int, int] | None) -> ChunkedPrograms:
        """`make_chunked`'s programs for these arguments' shapes (compiled as `_run_chunked` needs them)."""
        def build():
            *jitted, capacities = make_chunked(self.graphdef, spec, self.mesh, self.cache_dtype, self.decode_phases,
                                               self.min_phase_room)
            return ChunkedPrograms(tuple(jitted), capacities)

        return self._programs.get_or_compile(self.program_key(spec, args, packed, chunked=True), build)

    def _piece(self, progs: ChunkedPrograms, name: str, fn, *args, static: tuple = ()):
        """progs' executable `name` of the jitted `fn`, compiled for `args` (+ `static`) on first use."""
        if name not in progs.compiled:
            start = time.perf_counter()
            progs.compiled[name] = fn.lower(*args, *static).compile()
            self.compile_seconds += time.perf_counter() - start
        return progs.compiled[name]

    def _run_chunked(self, progs: ChunkedPrograms, args: tuple, n: int, on_progress) -> tuple:
        """Prefill, then the decode in chunks of about PROGRESS_SECONDS, telling on_progress(tokens,
        budget) (`progress_stats`) after each. Returns the outputs as the fused program does."""
        prefill, grow, chunk = progs.jitted
        state = self._piece(progs, "prefill", prefill, self.params, *args)(self.params, *args)
        step, phase, done = 0, 0, False
        while not done:
            if step > progs.capacities[phase]:  # this phase's cache is full: the next one's
                phase += 1
                state = self._piece(progs, f"grow{phase}", grow, state, static=(phase,))(state)
            until = np.int32(step + chunk_steps(progs.pace))
            run = self._piece(progs, f"chunk{phase}", chunk, self.params, state, until, static=(phase,))
            start, before = time.perf_counter(), step
            state, stats = run(self.params, state, until)
            step, all_done, tokens, budget = (int(x) for x in jax.device_get(stats))
            if step > before:
                progs.pace = (step - before) / max(time.perf_counter() - start, 1e-6)
            on_progress(tokens, budget)
            done = bool(all_done) or step >= n
        return state.tokens, state.logprobs, state.entropy, state.lengths, state.reason, state.step

    def _device_args(self, tokens, mask, seed, row_seeds, active, packing: Packing | None = None):
        """The prefill's inputs on the mesh, in one transfer (host numpy in; a batch-1 call on a
        small model is dominated by such fixed costs)."""
        rows = NamedSharding(self.mesh, P(BATCH))
        rows2 = NamedSharding(self.mesh, P(BATCH, None))
        host = (np.asarray(tokens, np.int32), np.asarray(mask, bool), np.asarray(seed, np.uint32),
                np.asarray(row_seeds, np.uint32), np.asarray(active, bool))
        shardings = (rows2, rows2, NamedSharding(self.mesh, P()), rows, rows)
        if packing is not None:
            pack = packing.arrays()
            host += (pack,)
            shardings += ({k: rows if v.ndim == 1 else rows2 for k, v in pack.items()},)
        if self.mesh.size == 1:  # the compiled call copies host arrays in itself, cheaper than device_put
            return host
        return tuple(jax.device_put(host, shardings))

    def run_batch(
        self,
        prompts: Sequence[Sequence[int]],
        spec: DecodeSpec,
        *,
        seed: int = 0,
        row_seeds: Sequence[int] | None = None,
        batch_size: int | None = None,
        pad_to: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> BatchOutput:
        """Generate for one batch of token-id prompts (each non-empty). Rows are padded up to
        `batch_size` (default len(prompts)) rounded up to `batch_multiple`; only the real rows
        come back. row_seeds [len(prompts)] pick each row's random stream (default 0..n-1).
        pad_to: a prompt length shared with other batches (`Generator` plans it so that they
        run one compiled program): the prompts are padded to it (at least their own bucket) and
        run unpacked; default: this batch's own bucket, packed when that pays. on_progress(tokens,
        budget): told as the decode goes (`progress_stats`, this batch's totals so far), which then
        runs in host-driven chunks (`make_chunked`; the same tokens); without it, one program."""
        check_prompts(prompts)
        n = len(prompts)
        m = self.batch_multiple
        b = max(batch_size or n, n)
        b = -(-b // m) * m
        t = max(bucket_length(max(len(p) for p in prompts), self.min_bucket, PROMPT_BUCKET_STEPS), pad_to or 0)
        self.check_fits(b, t, spec.max_new_tokens)
        tokens, mask = left_pad(prompts, b, t, spec.pad_id)
        mask[n:, t - 1] = True  # filler rows: one valid slot so their attention is well defined
        seeds = stream_seeds(row_seeds, n, b)
        active = np.arange(b) < n
        packing, order = None, np.arange(b)
        if self.pack and pad_to is None:
            if m > 1:  # rows are independent: deal them to the devices so that each packs a similar total
                order = balanced_order(mask.sum(1), m)
                tokens, mask, seeds, active = tokens[order], mask[order], seeds[order], active[order]
            packing = plan_packing(tokens, mask, m, min_bucket=self.min_bucket, capacity=self.pack_capacity,
                                   pad_id=spec.pad_id)
        args = self._device_args(tokens, mask, np.uint32(seed % (1 << 32)), seeds, active, packing)
        packed = None if packing is None else packing.shape
        if on_progress is None:
            out = self._compiled(spec, args, packed)(self.params, *args)
        else:
            out = self._run_chunked(self._chunked(spec, args, packed), args, spec.max_new_tokens, on_progress)
        rows = np.argsort(order)[:n]  # batch row i ran as row rows[i]
        tok, lp, ent, lengths, reason, step = jax.device_get(out)
        return BatchOutput(tok[rows], lp[rows], ent[rows], lengths[rows], reason[rows], int(step))


__all__ = [
    "DecodeState", "DecodeSpec", "Sampler", "BatchOutput", "Packing", "advance", "balanced_order",
    "DecodeProgramKey", "PROMPT_BUCKET_STEPS", "decode_phases", "fuse_by_default", "make_programs", "make_generate",
    "plan_packing", "FINISH_REASONS",
    "ChunkedPrograms", "chunk_steps", "check_prompts", "left_pad", "make_chunked", "progress_stats", "stream_seeds",
    "RUNNING", "EOS", "STOP", "LENGTH", "EARLY",
]
