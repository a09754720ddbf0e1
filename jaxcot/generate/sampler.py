"""The compiled sampler: one jitted prefill, then a `jax.lax.while_loop` over decode steps.

Shapes: B rows (padded to a multiple of the mesh's batch axes), T prompt slots (the longest prompt
rounded up to 2^k or 1.5 * 2^k: a dataset compiles a handful of programs), N = max_new_tokens,
S = T + N cache slots, V vocabulary, W stop-pattern width.

Prompts are left-padded, so every row's last prompt token sits in slot T - 1 and all rows decode
in lockstep into slots T, T+1, ...; the decoder derives each row's RoPE positions from its own
count of valid slots. The loop state (`DecodeState`, holding the `KVCache`) is an explicit pytree
sharded over the batch axes, updated in place by the loop. `Sampler` runs prefill and decode as
one compiled program that returns only what the host reads (`make_generate`): a second program
launch and the cache's hand-over cost about 0.5 ms a call (batch 1, the testbed's teacher).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcot.generate.sampling import SamplingConfig, derive_row_keys, sample, step_keys, token_stats
from jaxcot.generate.stop import StopPatterns, match_suffix
from jaxcot.models.decoder import Decoder, KVCache
from jaxcot.sharding import BATCH, make_mesh

Array = jax.Array

RUNNING, EOS, STOP, LENGTH = 0, 1, 2, 3
FINISH_REASONS = {RUNNING: "running", EOS: "eos", STOP: "stop", LENGTH: "length"}


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


def bucket_length(n: int, minimum: int = 16) -> int:
    """The smallest 2^k or 3 * 2^(k-1) (16, 24, 32, 48, 64, 96, ...) >= max(n, minimum).

    Half steps between powers of two cap the padding at a third of the bucket instead of half:
    prefill cost is a batch-1 call's main fixed cost, and two programs per octave stay few.
    """
    n = max(int(n), int(minimum), 1)
    power = 1 << (n - 1).bit_length()
    half = 3 * power // 4  # 1.5 * (power / 2)
    return half if n <= half and half > power // 2 else power


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
    new_reason = jnp.where(is_eos, EOS, jnp.where(is_stop, STOP, jnp.where(lengths >= spec.max_new_tokens, LENGTH, RUNNING)))
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


def make_programs(graphdef, spec: DecodeSpec, mesh: Mesh, cache_dtype):
    """(prefill, decode) as jitted functions.

    prefill(params, tokens [B, T] int32, mask [B, T] bool, seed [] uint32, row_seeds [B] uint32,
      active [B] bool) -> DecodeState: runs the prompt through the model, fills the cache, derives
      each row's PRNG key (`derive_row_keys`) and picks the first token.
    decode(params, state) -> state: the while-loop until every row is done or N tokens are
      written; `state` is donated.
    """

    def prefill(params, tokens, mask, seed, row_seeds, active):
        model: Decoder = nnx.merge(graphdef, params)
        b, t = tokens.shape
        cache = _constrain(KVCache.init(model.config, b, t + spec.max_new_tokens, cache_dtype), mesh)
        # The cache is empty: the prompt's attention reads its own T slots, not all T + N.
        out = model(tokens, mask=mask, cache=cache, logits_at=jnp.full((b,), t - 1, jnp.int32), attend_to=t)
        n = spec.max_new_tokens
        state = DecodeState(
            cache=out.cache,
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
        return _constrain(advance(state, out.logits[:, 0], spec), mesh)

    def decode(params, state):
        model: Decoder = nnx.merge(graphdef, params)

        def cond(s):
            return (s.step < spec.max_new_tokens) & ~jnp.all(s.done)

        def body(s):
            out = model(s.last[:, None], cache=s.cache)
            return advance(s.replace(cache=out.cache), out.logits[:, 0], spec)

        return _constrain(jax.lax.while_loop(cond, body, state), mesh)

    return jax.jit(prefill), jax.jit(decode, donate_argnums=(1,))


def make_generate(graphdef, spec: DecodeSpec, mesh: Mesh, cache_dtype):
    """prefill then decode as one jitted function, returning only the host's outputs.

    generate(params, tokens [B, T], mask [B, T], seed [], row_seeds [B], active [B]) ->
    (tokens [B, N], logprobs [B, N], entropy [B, N], lengths [B], reason [B], step []); the KV
    cache never leaves the program.
    """
    prefill, decode = make_programs(graphdef, spec, mesh, cache_dtype)

    def generate(params, tokens, mask, seed, row_seeds, active):
        s = decode(params, prefill(params, tokens, mask, seed, row_seeds, active))
        return s.tokens, s.logprobs, s.entropy, s.lengths, s.reason, s.step

    return jax.jit(generate)


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


class Sampler:
    """Runs batches of token-id prompts through compiled prefill + decode programs.

    model: a `Decoder` (parameters placed as the loader put them). mesh: batch rows are sharded
    over its (data, fsdp) axes (default: one device). Programs are compiled once per
    (DecodeSpec, batch, bucket) and kept; `compile_seconds` sums the time spent compiling.
    """

    def __init__(self, model: Decoder, *, mesh: Mesh | None = None, cache_dtype=None, min_bucket: int = 16):
        self.graphdef, self.params = nnx.split(model)
        self.config = model.config
        self.mesh = mesh or make_mesh(devices=jax.devices()[:1])
        self.cache_dtype = cache_dtype or model.dtype
        self.min_bucket = min_bucket
        self.compile_seconds = 0.0
        self._programs: dict = {}

    @property
    def batch_multiple(self) -> int:
        """Batches are padded to a multiple of the devices along the batch axes."""
        return int(np.prod([self.mesh.shape[a] for a in BATCH]))

    def _compiled(self, spec: DecodeSpec, b: int, t: int):
        key = (spec, b, t)
        if key not in self._programs:
            generate = make_generate(self.graphdef, spec, self.mesh, self.cache_dtype)
            start = time.perf_counter()
            args = self._device_args(
                np.zeros((b, t), np.int32), np.ones((b, t), bool), np.uint32(0), np.zeros(b, np.uint32), np.ones(b, bool)
            )
            self._programs[key] = generate.lower(self.params, *args).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._programs[key]

    def _device_args(self, tokens, mask, seed, row_seeds, active):
        """The prefill's inputs on the mesh, in one transfer (host numpy in; a batch-1 call on a
        small model is dominated by such fixed costs)."""
        rows = NamedSharding(self.mesh, P(BATCH))
        rows2 = NamedSharding(self.mesh, P(BATCH, None))
        host = (np.asarray(tokens, np.int32), np.asarray(mask, bool), np.asarray(seed, np.uint32),
                np.asarray(row_seeds, np.uint32), np.asarray(active, bool))
        if self.mesh.size == 1:  # the compiled call copies host arrays in itself, cheaper than device_put
            return host
        return tuple(jax.device_put(host, (rows2, rows2, NamedSharding(self.mesh, P()), rows, rows)))

    def run_batch(
        self,
        prompts: Sequence[Sequence[int]],
        spec: DecodeSpec,
        *,
        seed: int = 0,
        row_seeds: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> BatchOutput:
        """Generate for one batch of token-id prompts (each non-empty). Rows are padded up to
        `batch_size` (default len(prompts)) rounded up to `batch_multiple`; only the real rows
        come back. row_seeds [len(prompts)] pick each row's random stream (default 0..n-1)."""
        n = len(prompts)
        if n == 0:
            raise ValueError("no prompts")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
        m = self.batch_multiple
        b = max(batch_size or n, n)
        b = -(-b // m) * m
        t = bucket_length(max(len(p) for p in prompts), self.min_bucket)
        tokens = np.full((b, t), spec.pad_id, np.int32)
        mask = np.zeros((b, t), bool)
        for i, p in enumerate(prompts):
            tokens[i, t - len(p):] = p
            mask[i, t - len(p):] = True
        mask[n:, t - 1] = True  # filler rows: one valid slot so their attention is well defined
        seeds = np.zeros(b, np.uint32)
        seeds[:n] = np.arange(n) if row_seeds is None else np.asarray(row_seeds, np.uint64) % (1 << 32)
        active = np.arange(b) < n
        generate = self._compiled(spec, b, t)
        out = generate(self.params, *self._device_args(tokens, mask, np.uint32(seed % (1 << 32)), seeds, active))
        tok, lp, ent, lengths, reason, step = jax.device_get(out)
        return BatchOutput(tok[:n], lp[:n], ent[:n], lengths[:n], reason[:n], int(step))


__all__ = ["DecodeState", "DecodeSpec", "Sampler", "BatchOutput", "advance", "bucket_length", "make_programs",
           "make_generate", "FINISH_REASONS", "RUNNING", "EOS", "STOP", "LENGTH"]
