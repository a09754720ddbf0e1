"""The jitted SFT step: completion-only loss, gradient accumulation, clipping, AdamW.

State is pure pytrees (nested dicts of arrays) so that jit, optax, shardings and Orbax all see
the same structure: `params` (what trains: LoRA factors, or every `nnx.Param`), `frozen` (the
rest of the model, RNG keys included) and the optax `opt_state` built on `params` only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcot.runtime import step_compiler_options
from jaxcot.sharding import BATCH, replicated, tree_shardings
from jaxcot.train.config import OptimConfig

BATCH_KEYS = ("tokens", "mask", "positions", "segments", "loss_mask")


def split_model(model: nnx.Module, method: str) -> tuple[Any, dict, dict]:
    """(graphdef, params, frozen) as pure dicts; params = LoRA factors ('lora') or all Params."""
    what = nnx.LoRAParam if method == "lora" else nnx.Param
    graphdef, params, frozen = nnx.split(model, what, ...)
    params, frozen = params.to_pure_dict(), frozen.to_pure_dict()
    if not jax.tree.leaves(params):
        raise ValueError(f"method {method!r}: the model has no trainable parameters")
    return graphdef, params, frozen


def completion_nll_sum(logits: jax.Array, tokens: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Sum of -log p(token_t | <t) over completion tokens t.

    logits [B, T, V] float32 (slot t predicts token t+1); tokens [B, T] int; loss_mask [B, T]
    bool (True at completion tokens). Prompt and padding tokens carry no loss.
    """
    logits = logits[:, :-1].astype(jnp.float32)
    target = tokens[:, 1:]
    w = loss_mask[:, 1:].astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]
    return jnp.sum((lse - picked) * w)


def make_schedule(optim: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to lr, then cosine to lr * min_lr_ratio at `total_steps`."""
    warmup = optim.warmup_steps if optim.warmup_steps is not None else int(math.ceil(optim.warmup_ratio * total_steps))
    warmup = max(0, min(warmup, total_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optim.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=optim.lr * optim.min_lr_ratio,
    )


def make_optimizer(optim: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping then AdamW (decay on matrices only) under the warmup-cosine schedule."""
    schedule = make_schedule(optim, total_steps)
    parts = []
    if optim.clip_norm and optim.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.clip_norm))
    parts.append(
        optax.adamw(
            schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
            mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p),
        )
    )
    return optax.chain(*parts), schedule


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def fold_keys(tree, *data: jax.Array):
    """Every PRNG-key leaf folded with `data` (the step and micro-batch index): fresh dropout
    masks each step that depend only on (seed, step), so a resumed run draws the same ones."""
    def fold(x):
        if not _is_key(x):
            return x
        for d in data:
            x = jax.random.fold_in(x, d)
        return x

    return jax.tree.map(fold, tree)


@dataclasses.dataclass(frozen=True)
class StepShardings:
    params: Any
    frozen: Any
    opt_state: Any
    batch: NamedSharding
    scalar: NamedSharding


def step_shardings(mesh: Mesh, params, frozen, opt_state) -> StepShardings:
    """Parameter / optimizer-state shardings from the path rules; batches [A, B, T] on data x fsdp."""
    return StepShardings(
        params=tree_shardings(params, mesh),
        frozen=tree_shardings(frozen, mesh),
        opt_state=tree_shardings(opt_state, mesh),
        batch=NamedSharding(mesh, P(None, BATCH, None)),
        scalar=replicated(mesh),
    )


def make_train_step(
    graphdef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    shardings: StepShardings,
    *,
    packed: bool,
    loss_fn: Callable = completion_nll_sum,
    remat: bool = False,
):
    """The jitted step `(params, opt_state, frozen, batch, step) -> (params, opt_state, metrics)`.

    batch: the `jaxcot.data.sft` arrays [A, B, T] (A micro-batches, accumulated in a scan).
    The loss is the mean over the completion tokens of the whole global batch: each micro-batch
    contributes its NLL sum divided by the global count. metrics (float32 scalars): loss,
    grad_norm (before clipping), lr, tokens (real tokens), target_tokens.
    params and opt_state are donated. remat: the backward recomputes each block's forward
    (`Decoder.forward`): the same gradients in less memory.
    """

    def step_fn(params, opt_state, frozen, batch, step):
        n_target = jnp.maximum(jnp.sum(batch["loss_mask"][:, :, 1:], dtype=jnp.float32), 1.0)
        n_micro = batch["tokens"].shape[0]

        def loss_and_grads(mb, a):
            def loss_of(p):
                model = nnx.merge(graphdef, p, fold_keys(frozen, step, a))
                logits = model.forward(
                    mb["tokens"], mb["positions"], mb["mask"], segments=mb["segments"] if packed else None, remat=remat
                ).logits
                return loss_fn(logits, mb["tokens"], mb["loss_mask"]) / n_target

            return jax.value_and_grad(loss_of)(params)

        def micro(grads, xs):
            loss, g = loss_and_grads(*xs)
            return jax.tree.map(jnp.add, grads, g), loss

        if n_micro == 1:  # no accumulation: no loop, no zero-filled gradient buffer to add into
            loss, grads = loss_and_grads(jax.tree.map(lambda x: x[0], batch), jnp.asarray(0, jnp.int32))
            losses = loss[None]
        else:
            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, losses = jax.lax.scan(micro, zeros, (batch, jnp.arange(n_micro)))
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = dict(
            loss=jnp.sum(losses),
            grad_norm=grad_norm,
            lr=jnp.asarray(schedule(step), jnp.float32),
            tokens=jnp.sum(batch["mask"], dtype=jnp.float32),
            target_tokens=n_target,
        )
        return params, opt_state, metrics

    batch_sh = {k: shardings.batch for k in BATCH_KEYS}
    return jax.jit(
        step_fn,
        in_shardings=(shardings.params, shardings.opt_state, shardings.frozen, batch_sh, shardings.scalar),
        out_shardings=(shardings.params, shardings.opt_state, shardings.scalar),
        donate_argnums=(0, 1),
        compiler_options=step_compiler_options(),
    )


__all__ = [
    "BATCH_KEYS", "StepShardings", "completion_nll_sum", "fold_keys", "make_optimizer", "make_schedule",
    "make_train_step", "split_model", "step_shardings",
]
