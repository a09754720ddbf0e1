"""The jitted GRPO programs: per-token log-probabilities of a rollout batch (the rollout policy's
and the reference's), and the update step.

State is the SFT step's (`jaxcot.train.step`): `params` (what trains), `frozen` (the rest, RNG
keys included), the optax `opt_state`. A batch holds [A, b, T] arrays (A micro-batches of b rows
of T token slots): tokens, mask, positions (prompt then completion, right-padded),
completion_mask (True at generated tokens), old_logps / ref_logps [A, b, T] and advantages [A, b].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcot.rl.loss import LossSettings, grpo_loss, token_logprobs
from jaxcot.sharding import BATCH
from jaxcot.train.step import StepShardings, fold_keys

ROW_KEYS = ("tokens", "mask", "positions", "completion_mask", "old_logps", "ref_logps")


def batch_shardings(shardings: StepShardings) -> dict[str, NamedSharding]:
    """Rows over (data, fsdp): [A, b, T] arrays, and advantages [A, b]."""
    mesh = shardings.batch.mesh
    out = {k: shardings.batch for k in ROW_KEYS}
    out["advantages"] = NamedSharding(mesh, P(None, BATCH))
    return out


def _logps(model, mb, temperature: float) -> jax.Array:
    logits = model.forward(mb["tokens"], mb["positions"], mb["mask"]).logits
    return token_logprobs(logits, mb["tokens"], temperature)


def without_dropout(model):
    """The model with its dropout layers off (a view; the model itself when it has none)."""
    if any(isinstance(m, nnx.Dropout) for _, m in nnx.iter_graph(model)):
        return nnx.view(model, deterministic=True)
    return model


def make_logps_fn(graphdef, shardings: StepShardings, temperature: float):
    """`(params, frozen, batch) -> logps [A, b, T]`: the model's per-token log-probabilities at
    `temperature`, dropout off (the rollout policy's, or the reference's with its parameters)."""

    def fn(params, frozen, batch):
        model = without_dropout(nnx.merge(graphdef, params, frozen))
        return jax.lax.map(lambda mb: _logps(model, mb, temperature), batch)

    sh = batch_shardings(shardings)
    in_batch = {k: sh[k] for k in ("tokens", "mask", "positions")}
    compiled = jax.jit(fn, in_shardings=(shardings.params, shardings.frozen, in_batch), out_shardings=shardings.batch)
    return lambda params, frozen, batch: compiled(params, frozen, {k: batch[k] for k in in_batch})


def make_grpo_step(graphdef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                   shardings: StepShardings, settings: LossSettings, temperature: float, *, first_iteration: bool):
    """The jitted step `(params, opt_state, frozen, batch, step) -> (params, opt_state, metrics)`.

    first_iteration: the parameters are still the rollout policy's, so the ratio is taken against
    the current log-probabilities (exactly 1, `grpo_loss` with old_logps None) and the batch's
    old_logps are not read. The loss is the whole batch's (micro-batches add up through the
    global row and token counts). metrics: loss, grad_norm, lr, kl, clip_ratio, ratio (token
    means). params and opt_state are donated.
    """

    def step_fn(params, opt_state, frozen, batch, step):
        cm = batch["completion_mask"]
        n_rows = jnp.asarray(cm.shape[0] * cm.shape[1], jnp.float32)
        n_tokens = jnp.maximum(jnp.sum(cm, dtype=jnp.float32), 1.0)

        def loss_and_grads(mb, a):
            def loss_of(p):
                model = nnx.merge(graphdef, p, fold_keys(frozen, step, a))
                logps = _logps(model, mb, temperature)
                return grpo_loss(logps, None if first_iteration else mb["old_logps"],
                                 mb["ref_logps"] if settings.beta else None, mb["advantages"],
                                 mb["completion_mask"], settings, rows=n_rows, tokens=n_tokens)

            return jax.value_and_grad(loss_of, has_aux=True)(params)

        def micro(carry, xs):
            grads, stats = carry
            (loss, s), g = loss_and_grads(*xs)
            return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, stats, s)), loss

        zero_stats = {k: jnp.zeros((), jnp.float32) for k in ("kl", "clip_ratio", "ratio")}
        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, stats), losses = jax.lax.scan(micro, (zeros, zero_stats), (batch, jnp.arange(cm.shape[0])))
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = dict(loss=jnp.sum(losses), grad_norm=grad_norm, lr=jnp.asarray(schedule(step), jnp.float32),
                       **{k: v / n_tokens for k, v in stats.items()})
        return params, opt_state, metrics

    return jax.jit(
        step_fn,
        in_shardings=(shardings.params, shardings.opt_state, shardings.frozen, batch_shardings(shardings),
                      shardings.scalar),
        out_shardings=(shardings.params, shardings.opt_state, shardings.scalar),
        donate_argnums=(0, 1),
    )


__all__ = ["ROW_KEYS", "batch_shardings", "make_grpo_step", "make_logps_fn"]
