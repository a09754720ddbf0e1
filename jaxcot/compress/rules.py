"""Token- and step-selection rules, as jitted functions of padded arrays.

Every function works on a batch of traces padded to a common length: `[B, C]` arrays with a
boolean `valid[B, C]` mask (True on the trace's chain tokens C, False on padding). Scores must be
finite on valid positions (the caller checks). Per-trace knobs (`gamma`) may be scalars or `[B]`.

Definitions fixed here (docs/method.md, ADS and baselines, marks them as ours):

- Percentile rank (ADS): the textbook mid-rank, `r_t = (#{s_j < s_t} + 0.5 * #{s_j = s_t}) / n`
  over the trace's n chain tokens. With distinct scores and a constant rate gamma, the ADS rule
  `r_t >= 1 - gamma` keeps round(gamma * n) tokens (halves rounded up), so the mean retention is
  unbiased; tied scores share one rank and are kept or dropped together.
- Static quantile (TokenSkip): keep t when fewer than k = ceil(gamma * n) tokens score strictly
  higher, i.e. when s_t is at or above the k-th largest score. Distinct scores keep exactly k;
  ties at the threshold are all kept (so ties can keep more than k) unless `ties="position"`, which
  breaks ties by position (earlier first) and keeps exactly k. gamma * n within a relative 1e-6
  of an integer counts as that integer (gamma is float32 here).
- N-constraint window: trailing, s_t = mean of H_u / log|V| over u in [t - w + 1, t] (fewer at the
  start of the trace). Trailing keeps the rule causal, and with it raising the entropy of a region
  changes nothing before the region, which is what makes the region's retention monotone
  (tests/test_compress_rules.py). N_t = floor(N_max - (N_max - N_min) * s_t + 0.5) (half up).
- Monotonicity: with a fixed z normalisation (`z_mean`, `z_std`), raising the entropy of a region
  never lowers the number of its tokens kept (gamma_t rises pointwise, N_t falls pointwise from the
  region on, and the greedy N-constraint keeps at least as many tokens in every prefix). With
  the per-trace z-score (docs/method.md, ADS) the region's mean z never falls, but the trace's mean and std move
  too, so one token can slip across the threshold; on random traces the region rarely loses one
  and gains on average (tests/test_compress_rules.py).
- The N-constraint only adds tokens, so with beta = 0 the mean retention is gamma without it and
  above gamma with it, the more so the more clustered low importance is. The `calibrate` option
  shifts gamma to compensate.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

_REL_TOL = 1e-6


def _per_row(x, batch: int) -> jax.Array:
    """A scalar or [B] knob as a float32 [B, 1] column."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.broadcast_to(x.reshape(-1) if x.ndim else x, (batch,))[:, None]


def _ceil_count(x: jax.Array) -> jax.Array:
    return jnp.ceil(x - _REL_TOL * jnp.maximum(x, 1.0)).astype(jnp.int32)


def _floor_count(x: jax.Array) -> jax.Array:
    return jnp.floor(x + _REL_TOL * jnp.maximum(x, 1.0)).astype(jnp.int32)


def _rank_counts(scores: jax.Array, valid: jax.Array):
    """Per token, (#valid scores < s_t, #valid scores <= s_t, n): three int32 arrays [B, C], [B, C], [B, 1]."""
    s = jnp.where(valid, scores.astype(jnp.float32), jnp.inf)
    srt = jnp.sort(s, axis=-1)
    less = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))(srt, s)
    leq = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(srt, s)
    n = valid.sum(-1, keepdims=True).astype(jnp.int32)
    return less.astype(jnp.int32), leq.astype(jnp.int32), n


@jax.jit
def percentile_rank(scores: jax.Array, valid: jax.Array) -> jax.Array:
    """Mid-rank percentile of each score among its trace's valid tokens.

    scores [B, C] float, valid [B, C] bool -> [B, C] float32 in (0, 1] on valid slots (0 on padding).
    """
    less, leq, n = _rank_counts(scores, valid)
    r = (less + 0.5 * (leq - less)) / jnp.maximum(n, 1)
    return jnp.where(valid, r, 0.0).astype(jnp.float32)


@partial(jax.jit, static_argnames=("ties",))
def static_keep(scores: jax.Array, valid: jax.Array, gamma, *, ties: str = "all") -> jax.Array:
    """TokenSkip's static ratio rule: keep tokens at or above the (1 - gamma) quantile.

    scores [B, C], valid [B, C] bool, gamma scalar or [B] (fraction kept) -> keep [B, C] bool.
    ties="all": every token tied with the k-th largest score is kept (k = ceil(gamma * n));
    ties="position": ties broken by position, earlier first, so exactly k are kept.
    """
    b = scores.shape[0]
    n = valid.sum(-1, keepdims=True)
    k = _ceil_count(_per_row(gamma, b) * n)
    if ties == "all":
        _, leq, n_i = _rank_counts(scores, valid)
        greater = n_i - leq
        return valid & (greater < k)
    if ties == "position":
        key = jnp.where(valid, -scores.astype(jnp.float32), jnp.inf)
        order = jnp.argsort(key, axis=-1, stable=True)
        pos = jnp.broadcast_to(jnp.arange(scores.shape[1]), scores.shape)
        rank = jnp.zeros_like(pos).at[jnp.arange(b)[:, None], order].set(pos)
        return valid & (rank < k)
    raise ValueError(f"ties must be 'all' or 'position', got {ties!r}")


@jax.jit
def entropy_zscore(entropy: jax.Array, valid: jax.Array, eps=1e-6) -> jax.Array:
    """z_t = (H_t - mean_C H) / (std_C H + eps) inside each trace (population std).

    entropy [B, C], valid [B, C] bool -> [B, C] float32 (0 on padding).
    """
    h = jnp.where(valid, entropy.astype(jnp.float32), 0.0)
    n = jnp.maximum(valid.sum(-1, keepdims=True), 1)
    mean = h.sum(-1, keepdims=True) / n
    var = jnp.where(valid, (h - mean) ** 2, 0.0).sum(-1, keepdims=True) / n
    return jnp.where(valid, (h - mean) / (jnp.sqrt(var) + eps), 0.0)


@jax.jit
def token_rates(entropy, valid, gamma, beta=0.15, gamma_min=0.2, gamma_max=0.95, eps=1e-6, z_mean=None,
                z_std=None) -> jax.Array:
    """Entropy-driven rate: gamma_t = clip(gamma + beta * z_t, gamma_min, gamma_max).

    entropy [B, C], valid [B, C] bool, gamma scalar or [B] (per-trace base rate, already including
    any trace-level shift) -> gamma_t [B, C] float32. z_t is standardised inside each trace, or,
    when z_mean and z_std are given (scalars, e.g. dataset statistics), z_t = (H_t - z_mean) /
    (z_std + eps), which makes gamma_t depend on the token's own entropy alone.
    """
    if z_mean is None:
        z = entropy_zscore(entropy, valid, eps)
    else:
        z = jnp.where(valid, (entropy.astype(jnp.float32) - z_mean) / (jnp.float32(z_std) + eps), 0.0)
    g = _per_row(gamma, entropy.shape[0]) + jnp.float32(beta) * z
    return jnp.clip(g, gamma_min, gamma_max)


@jax.jit
def drop_limits(entropy, valid, log_vocab, n_min=1, n_max=6, window=8) -> jax.Array:
    """Adaptive N: N_t = round_half_up(N_max - (N_max - N_min) * s_t), s_t the trailing mean of
    H / log|V| over the last `window` chain tokens (t included).

    entropy [B, C] nats, valid [B, C] bool, log_vocab scalar or [B] (log of the vocabulary size)
    -> [B, C] int32.
    """
    log_vocab = jnp.asarray(log_vocab, jnp.float32)
    log_vocab = log_vocab.reshape(-1, 1) if log_vocab.ndim else log_vocab
    h = jnp.where(valid, entropy.astype(jnp.float32) / log_vocab, 0.0)
    h = jnp.clip(h, 0.0, 1.0)
    cs = jnp.cumsum(h, axis=-1)
    c = h.shape[1]
    t = jnp.arange(c)
    window = jnp.asarray(window, jnp.int32)
    prev = t - window
    before = jnp.where(prev >= 0, jnp.take(cs, jnp.clip(prev, 0, c - 1), axis=1), 0.0)
    s = (cs - before) / jnp.minimum(t + 1, window).astype(jnp.float32)
    n_min = jnp.float32(n_min)
    n_max = jnp.float32(n_max)
    return jnp.floor(n_max - (n_max - n_min) * s + 0.5).astype(jnp.int32)


def _anc_row(want: jax.Array, limit: jax.Array, valid: jax.Array, protect: jax.Array):
    def step(run, x):
        w, n, v, p = x
        keep = v & (w | p | (run + 1 > n))
        run = jnp.where(keep | ~v, 0, run + 1)
        return run, keep

    _, keep = jax.lax.scan(step, jnp.int32(0), (want, limit, valid, protect))
    return keep


@jax.jit
def n_constraint(want: jax.Array, limits: jax.Array, valid: jax.Array, protect: jax.Array | None = None) -> jax.Array:
    """Adaptive N-constraint: walk left to right; a token whose drop would make the current run of
    drops longer than N_t is kept instead (a `lax.scan` per trace, vmapped over the batch).

    want [B, C] bool (tokens the rate rule keeps), limits [B, C] int32 (N_t), valid [B, C] bool,
    protect [B, C] bool (always kept) -> keep [B, C] bool, a superset of want & valid.
    """
    if protect is None:
        protect = jnp.zeros_like(valid)
    return jax.vmap(_anc_row)(want, limits, valid, protect)


@partial(jax.jit, static_argnames=("anc",))
def ads_keep(
    scores,
    entropy,
    valid,
    protect,
    log_vocab,
    gamma=0.55,
    beta=0.15,
    gamma_min=0.2,
    gamma_max=0.95,
    eps=1e-6,
    n_min=1,
    n_max=6,
    window=8,
    z_mean=None,
    z_std=None,
    *,
    anc: bool = True,
):
    """Adaptive dynamic skipping (entropy-driven rate + adaptive N-constraint).

    scores [B, C] importance (GoGI or another source), entropy [B, C] nats, valid [B, C] bool,
    protect [B, C] bool (always kept, and not candidates: ranks and z-scores are taken over
    valid & ~protect), log_vocab scalar or [B], gamma scalar or [B]; z_mean/z_std: fixed entropy
    statistics for the z-score (see `token_rates`), None for the per-trace z-score (docs/method.md, ADS).
    A candidate is wanted when its percentile rank is >= 1 - gamma_t; the N-constraint then keeps
    tokens that would extend a run of drops past N_t (skipped when anc=False); protected tokens
    end a run of drops like any kept token.
    Returns (keep [B, C] bool, gamma_t [B, C] float32, N_t [B, C] int32).
    """
    cand = valid & ~protect
    rates = token_rates(entropy, cand, gamma, beta, gamma_min, gamma_max, eps, z_mean, z_std)
    want = (cand & (percentile_rank(scores, cand) >= 1.0 - rates)) | (valid & protect)
    limits = drop_limits(entropy, valid, log_vocab, n_min, n_max, window)
    keep = n_constraint(want, limits, valid, protect) if anc else want
    return keep, rates, limits


@partial(jax.jit, static_argnames=("num_steps", "agg"))
def step_scores(entropy: jax.Array, step_ids: jax.Array, valid: jax.Array, *, num_steps: int,
                agg: str = "sum") -> jax.Array:
    """Step entropy: sum (or mean) of H_t over each step's tokens.

    entropy [B, C], step_ids [B, C] int (0..num_steps-1 on valid slots), valid [B, C] bool
    -> [B, num_steps] float32 (0 for steps with no tokens).
    """
    b = entropy.shape[0]
    ids = jnp.where(valid, step_ids + jnp.arange(b)[:, None] * num_steps, b * num_steps)
    h = jnp.where(valid, entropy.astype(jnp.float32), 0.0)
    total = jax.ops.segment_sum(h.reshape(-1), ids.reshape(-1), num_segments=b * num_steps + 1)[:-1]
    total = total.reshape(b, num_steps)
    if agg == "sum":
        return total
    if agg == "mean":
        count = jax.ops.segment_sum(valid.reshape(-1).astype(jnp.float32), ids.reshape(-1),
                                    num_segments=b * num_steps + 1)
        return total / jnp.maximum(count[:-1].reshape(b, num_steps), 1.0)
    raise ValueError(f"agg must be 'sum' or 'mean', got {agg!r}")


@jax.jit
def lowest_steps(scores: jax.Array, eligible: jax.Array, kappa) -> jax.Array:
    """Mark the floor(kappa * m) lowest-scoring eligible steps (m eligible steps in the trace) for
    pruning; ties broken by position (earlier first).

    scores [B, S], eligible [B, S] bool, kappa scalar or [B] -> prune [B, S] bool.
    """
    b, s = scores.shape
    m = eligible.sum(-1, keepdims=True)
    k = _floor_count(_per_row(kappa, b) * m)
    key = jnp.where(eligible, scores.astype(jnp.float32), jnp.inf)
    order = jnp.argsort(key, axis=-1, stable=True)
    pos = jnp.broadcast_to(jnp.arange(s), (b, s))
    rank = jnp.zeros_like(pos).at[jnp.arange(b)[:, None], order].set(pos)
    return eligible & (rank < k)
