"""Token choice and per-token statistics: pure, jittable functions of float32 logits.

Shapes: B rows, V vocabulary, k the top-k width.

Randomness is per row: each row carries its own PRNG key and folds in the decode step, so a
row's samples depend only on its own key and prompt, never on which rows share its batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcot.generate.config import SamplingConfig

Array = jax.Array


def token_stats(logits: Array, chosen: Array) -> tuple[Array, Array]:
    """Model log-probability of the chosen token and predictive entropy (nats), both float32.

    logits [R, V] (the raw model distribution, before temperature / top-k / top-p);
    chosen [R] int -> (logprob [R], entropy [R]). The entropy is over the full vocabulary.
    Computed as reductions over the logits: the [R, V] log-probabilities are never written out.
    """
    x = logits.astype(jnp.float32)
    z = x - jnp.max(x, axis=-1, keepdims=True)
    e = jnp.exp(z)
    total = jnp.sum(e, axis=-1)
    log_total = jnp.log(total)
    entropy = log_total - jnp.sum(jnp.where(e > 0, e * z, 0.0), axis=-1) / total  # 0 * -inf is 0 here
    chosen_logp = jnp.take_along_axis(z, chosen[:, None].astype(jnp.int32), axis=-1)[:, 0] - log_total
    return chosen_logp, entropy


def argmax(logits: Array) -> Array:
    """jnp.argmax over the last axis (the first maximum; the first NaN if any), as two plain
    reductions: XLA:CPU runs argmax's (value, index) reduction unvectorized, several times
    slower over a large vocabulary. logits [R, V] -> [R] int32."""
    top = jnp.max(logits, axis=-1, keepdims=True)
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    hit = (logits == top) | jnp.isnan(logits)
    return jnp.min(jnp.where(hit, ids, logits.shape[-1]), axis=-1)


def filter_logits(logits: Array, cfg: SamplingConfig) -> tuple[Array, Array | None]:
    """Apply temperature, top-k and top-p to logits [B, V] (float32).

    Returns (candidate logits [B, C], candidate token ids [B, C] or None when C == V and the
    candidates are the vocabulary in order). Removed candidates hold -inf.
    """
    x = logits.astype(jnp.float32) / jnp.float32(cfg.temperature)
    vocab = x.shape[-1]
    ids = None
    if cfg.top_k and cfg.top_k < vocab:
        x, ids = jax.lax.top_k(x, cfg.top_k)  # sorted, descending
    if cfg.top_p < 1.0:
        if ids is None:
            x, ids = jax.lax.top_k(x, vocab)  # a full descending sort
        probs = jax.nn.softmax(x, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # Keep a token while the mass of the tokens ranked above it is still short of top_p;
        # the most likely token is always kept.
        x = jnp.where(mass_before < jnp.float32(cfg.top_p), x, -jnp.inf)
    return x, ids


def sample(logits: Array, keys: Array, cfg: SamplingConfig) -> Array:
    """Choose one token per row. logits [B, V]; keys [B] PRNG keys (unused when greedy) -> [B] int32."""
    if cfg.greedy:
        return argmax(logits)
    cand, ids = filter_logits(logits, cfg)
    pick = jax.vmap(lambda k, row: jax.random.categorical(k, row))(keys, cand).astype(jnp.int32)
    if ids is None:
        return pick
    return jnp.take_along_axis(ids, pick[:, None], axis=-1)[:, 0].astype(jnp.int32)


def derive_row_keys(seed: Array, row_seeds: Array) -> Array:
    """Per-row PRNG keys [B] from a run seed (uint32 scalar) and per-row seeds [B] uint32: the
    traceable form, for use inside a compiled program (the sampler's prefill)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(row_seeds)


def row_keys(seed: int, row_seeds: Array) -> Array:
    """`derive_row_keys` from host ints: a run seed and per-row seeds [B] (e.g. dataset indices).
    The sampler derives its keys inside the prefill program instead."""
    return derive_row_keys(jnp.asarray(seed, jnp.uint32), jnp.asarray(row_seeds, jnp.uint32))


def step_keys(keys: Array, step: Array) -> Array:
    """The keys [B] for decode step `step` (scalar int): each row's key with the step folded in."""
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)


__all__ = ["SamplingConfig", "argmax", "token_stats", "filter_logits", "sample", "derive_row_keys", "row_keys",
           "step_keys"]
