"""GRPO's arithmetic as pure functions: group-normalised advantages, per-token log-probabilities,
the clipped policy-ratio objective with the k3 KL estimate, and its two aggregations.

Shapes: R completion rows (P prompts x G generations, a prompt's rows adjacent), T token slots,
V vocabulary. Per-token arrays are aligned with the tokens: entry [r, t] belongs to token t of
row r (its log-probability given tokens < t); `mask` [R, T] is True at completion tokens only.
The formulas follow TRL's GRPOTrainer (docs/method.md, "GRPO").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcot.rl.config import LOSS_TYPES

Array = jax.Array
STD_EPS = 1e-4


def group_advantages(rewards: np.ndarray, group: int, *, scale: bool = True) -> np.ndarray:
    """Each row's reward minus its group's mean, over the group's (unbiased) std + 1e-4 when
    `scale`. rewards [R] (groups of `group` adjacent rows) -> advantages [R] float32. A group whose
    rewards are all equal gets zeros."""
    r = np.asarray(rewards, np.float64)
    if r.ndim != 1 or r.size % group:
        raise ValueError(f"rewards of shape {r.shape} do not split into groups of {group}")
    g = r.reshape(-1, group)
    adv = g - g.mean(axis=1, keepdims=True)
    if scale:
        std = g.std(axis=1, ddof=1, keepdims=True) if group > 1 else np.zeros_like(g[:, :1])
        adv = adv / (std + STD_EPS)
    return adv.reshape(-1).astype(np.float32)


def token_logprobs(logits: Array, tokens: Array, temperature: float = 1.0) -> Array:
    """log p(tokens[:, t] | tokens[:, :t]) at `temperature`. logits [R, T, V] (slot t predicts
    token t + 1), tokens [R, T] -> [R, T] float32, 0 at t = 0 (no prediction)."""
    x = logits[:, :-1].astype(jnp.float32) / jnp.float32(temperature)
    picked = jnp.take_along_axis(x, tokens[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
    lp = picked - jax.nn.logsumexp(x, axis=-1)
    return jnp.pad(lp, ((0, 0), (1, 0)))


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """epsilon_low / epsilon_high: the ratio is clipped to [1 - low, 1 + high]; beta: weight of
    the KL to the reference (0: no reference pass); loss_type: 'grpo' or 'dapo' (`aggregate`)."""

    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0
    loss_type: str = "grpo"

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")


def per_token_objective(logps: Array, old_logps: Array, ref_logps: Array | None, advantages: Array,
                        settings: LossSettings) -> tuple[Array, dict[str, Array]]:
    """The per-token loss -min(ratio * A, clip(ratio) * A) + beta * KL3 and its parts.

    logps / old_logps / ref_logps [R, T], advantages [R] -> (loss [R, T], {'kl' [R, T] (zeros
    without beta), 'clipped' [R, T] bool: the clipped term was the smaller one, 'ratio' [R, T]}).
    KL3 = exp(ref - logp) - (ref - logp) - 1, zero where the policy equals the reference.
    """
    ratio = jnp.exp(logps - old_logps)
    clipped_ratio = jnp.clip(ratio, 1.0 - settings.epsilon_low, 1.0 + settings.epsilon_high)
    a = advantages[:, None].astype(jnp.float32)
    unclipped, clipped = ratio * a, clipped_ratio * a
    loss = -jnp.minimum(unclipped, clipped)
    kl = jnp.zeros_like(loss)
    if settings.beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference model's log-probabilities")
        d = ref_logps - logps
        kl = jnp.exp(d) - d - 1.0
        loss = loss + settings.beta * kl
    return loss, {"kl": kl, "clipped": clipped < unclipped, "ratio": ratio}


def aggregate(per_token: Array, mask: Array, loss_type: str, *, rows: Array | float | None = None,
              tokens: Array | float | None = None) -> Array:
    """The batch loss from per_token [R, T] over mask [R, T].

    'grpo': each row's mean over its tokens, summed and divided by `rows` (default R): TRL's
    sequence-mean-token-mean. 'dapo': the sum over all tokens divided by `tokens` (default the
    mask's count): the token-mean of the whole batch (TRL's 'dapo'; its 'bnpo' without
    gradient accumulation). Passing the global counts lets micro-batches add up to the
    whole batch's loss.
    """
    m = mask.astype(jnp.float32)
    if loss_type == "grpo":
        per_row = jnp.sum(per_token * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
        return jnp.sum(per_row) / (per_token.shape[0] if rows is None else rows)
    if loss_type == "dapo":
        return jnp.sum(per_token * m) / (jnp.maximum(jnp.sum(m), 1.0) if tokens is None else tokens)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def grpo_loss(logps: Array, old_logps: Array | None, ref_logps: Array | None, advantages: Array, mask: Array,
              settings: LossSettings, *, rows=None, tokens=None) -> tuple[Array, dict[str, Array]]:
    """The GRPO loss of a batch and its token-mean statistics.

    old_logps None: the rollout policy is the current one (TRL's single-iteration case) and the
    ratio is exp(logp - stop_gradient(logp)): exactly 1, with the policy gradient intact.
    Returns (loss [], {'kl', 'clip_ratio', 'ratio'}: sums over the mask's tokens, to be divided
    by the token count). rows / tokens: see `aggregate`.
    """
    old = jax.lax.stop_gradient(logps) if old_logps is None else old_logps
    per_token, parts = per_token_objective(logps, old, ref_logps, advantages, settings)
    loss = aggregate(per_token, mask, settings.loss_type, rows=rows, tokens=tokens)
    m = mask.astype(jnp.float32)
    stats = {
        "kl": jnp.sum(parts["kl"] * m),
        "clip_ratio": jnp.sum(parts["clipped"].astype(jnp.float32) * m),
        "ratio": jnp.sum(parts["ratio"] * m),
    }
    return loss, stats


__all__ = ["LOSS_TYPES", "LossSettings", "aggregate", "group_advantages", "grpo_loss", "per_token_objective",
           "token_logprobs"]
