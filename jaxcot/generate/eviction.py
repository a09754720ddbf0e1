"""KV-cache eviction scorers: which cached chain tokens a row under a budget drops first.

A scorer is a pure, jittable function `scorer(running, step) -> (running, priority)`:
`running` [B, S, EVICTION_STATE] float32 is what it carries from step to step (zeros for a new
row), `step` an `EvictionStep` (this decode step's attention and keys), `priority` [B, S] the
order of eviction (the lowest valid, evictable chain slot goes first). The engine never evicts
the prompt or the last `window` chain tokens, whatever the scores (`jaxcot.generate.engine`).

Built-ins (`EVICTION_SCORERS`; 'package.module:function' reaches a user's own):
- attention: the mean attention each token has received from the queries since it was written
  (mean over layers and heads). H2O sums it instead; a sum favours old tokens, which have had
  more queries, and on the testbed it evicted the latest results first (docs/method.md).
- redundancy: R-KV's mix of importance and redundancy (arXiv 2505.24133): lam x the attention
  received (decayed) minus (1 - lam) x how much the token's key resembles the keys written
  after it (a running mean of cosine similarities in the last layer). R-KV compares every pair
  of cached keys every few steps; we compare each new key with the cache, O(S) a step instead of
  O(S^2) (docs/method.md, "Decode-time compression").
- recency: the oldest chain token goes first (StreamingLLM's sliding window over the chain).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jaxcot.registry import Registry

Array = jax.Array

EVICTION_STATE = 2  # float32 channels per cache slot a scorer may carry
REDUNDANCY_LAMBDA = 0.1  # R-KV's default weight of importance against redundancy
REDUNDANCY_DECAY = 0.9


@flax.struct.dataclass
class EvictionStep:
    """What a scorer sees of one decode step, per row (B) and cache slot (S):
    attention [B, S] float32, the attention the step's query paid each slot (mean over layers and
    heads; the slot written this step included), attention_max [B, S] (the most any one head of
    any layer paid it), keys [B, S, Dh] float32 (the last layer's keys,
    mean over kv heads), written [B] int32 (the slot this step wrote), valid [B, S] bool, pos [B,
    S] int32 (each slot's position in its sequence)."""

    attention: Array
    attention_max: Array
    keys: Array
    written: Array
    valid: Array
    pos: Array


EVICTION_SCORERS: Registry = Registry("eviction scorer")


def _fresh(running: Array, step: EvictionStep) -> Array:
    """running with the slot written this step cleared (a new token starts from nothing)."""
    hit = jax.nn.one_hot(step.written, running.shape[1], dtype=bool)[..., None]
    return jnp.where(hit, 0.0, running)


@EVICTION_SCORERS.register("attention")
def attention_scorer(running: Array, step: EvictionStep) -> tuple[Array, Array]:
    running = _fresh(running, step)
    received = running[..., 0] + step.attention
    queries = running[..., 1] + 1.0
    return jnp.stack([received, queries], axis=-1), received / queries


@EVICTION_SCORERS.register("redundancy")
def redundancy_scorer(running: Array, step: EvictionStep) -> tuple[Array, Array]:
    running = _fresh(running, step)
    importance = REDUNDANCY_DECAY * running[..., 0] + step.attention
    unit = step.keys / jnp.maximum(jnp.linalg.norm(step.keys, axis=-1, keepdims=True), 1e-6)
    new = jnp.take_along_axis(unit, step.written[:, None, None], axis=1)  # [B, 1, Dh]
    similar = jnp.einsum("bsd,bod->bs", unit, new)
    redundancy = REDUNDANCY_DECAY * running[..., 1] + (1 - REDUNDANCY_DECAY) * similar
    total = jnp.sum(jnp.where(step.valid, importance, 0.0), axis=1, keepdims=True)
    priority = REDUNDANCY_LAMBDA * importance / jnp.maximum(total, 1e-9) - (1 - REDUNDANCY_LAMBDA) * redundancy
    return jnp.stack([importance, redundancy], axis=-1), priority


@EVICTION_SCORERS.register("recency")
def recency_scorer(running: Array, step: EvictionStep) -> tuple[Array, Array]:
    return running, step.pos.astype(jnp.float32)


__all__ = ["EVICTION_SCORERS", "EVICTION_STATE", "EvictionStep", "attention_scorer", "redundancy_scorer",
           "recency_scorer"]
