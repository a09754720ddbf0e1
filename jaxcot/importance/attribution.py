"""Token scores beside GoGI, from the same answer loss at the same layer (docs/method.md,
"Importance beside GoGI"): gradient x activation, integrated gradients along GoGI's
perturbation, the answer's attention to each token, the loss change when a token's residual is
ablated (the counterfactual the others are compared with), and a token's log-probability under
the model minus under a reference model (CTS).

All take a padded batch: tokens [B, T] int32, mask / chain_mask / answer_mask [B, T] bool, and
return float32 [B, T] (zero off the chain). `layers` are residual streams h^l as in GoGI (0 =
embeddings); several are averaged, each perturbed alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot.importance.gogi import _loss_fn, predictive_stats

Array = jax.Array


def _hidden(model, tokens, mask, layer: int) -> Array:
    out = model.forward(tokens, mask=mask, return_hidden=True, with_logits=False)
    return jax.lax.stop_gradient(out.hidden[layer]).astype(jnp.promote_types(model.dtype, jnp.float32))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("layers", "alphas", "max_answer"))
def _path_impl(graphdef, state, tokens, mask, chain_mask, answer_mask, *, layers, alphas, max_answer):
    model = nnx.merge(graphdef, state)
    answer_mask = answer_mask & mask
    each = []
    for layer in layers:
        loss_fn = _loss_fn(model, tokens, mask, answer_mask, tokens, (layer,), max_answer)
        h = _hidden(model, tokens, mask, layer)

        def grad_sum(total, alpha, h=h, loss_fn=loss_fn):
            g = jax.grad(lambda d: loss_fn((d,))[0])((alpha - 1.0) * h)  # the gradient at alpha * h^l
            return total + g, None

        total, _ = jax.lax.scan(grad_sum, jnp.zeros_like(h), jnp.asarray(alphas, h.dtype))
        each.append(jnp.abs(jnp.sum(h * total / len(alphas), axis=-1)))
    return jnp.where(chain_mask & mask, jnp.mean(jnp.stack(each), axis=0), 0.0)


def path_attribution(model, tokens, mask, chain_mask, answer_mask, *, layers, alphas, max_answer) -> Array:
    """|sum_d h^l_td * mean over alpha of dL_ans/dh^l at alpha * h^l| per token [B, T]: gradient
    x activation with alphas (1.0,); integrated gradients from h^l = 0 (GoGI's perturbation
    taken all the way to erasing the stream) with the midpoints of n steps."""
    graphdef, state = nnx.split(model)
    return _path_impl(graphdef, state, tokens, mask, chain_mask, answer_mask, layers=tuple(layers),
                      alphas=tuple(float(a) for a in alphas), max_answer=max_answer)


def midpoints(steps: int) -> tuple[float, ...]:
    """The midpoint rule's alphas for `steps` steps on [0, 1]."""
    return tuple((i + 0.5) / steps for i in range(steps))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("layers", "max_answer", "chunk", "width"))
def _ablation_impl(graphdef, state, tokens, mask, chain_mask, answer_mask, start, *, layers, max_answer, chunk, width):
    model = nnx.merge(graphdef, state)
    answer_mask = answer_mask & mask
    t = tokens.shape[1]
    slots = start + jnp.arange(width)  # the span holding every row's chain (`chain_span`)
    each = []
    for layer in layers:
        loss_fn = _loss_fn(model, tokens, mask, answer_mask, tokens, (layer,), max_answer)
        h = _hidden(model, tokens, mask, layer)
        base = loss_fn((jnp.zeros_like(h),))[1][0]  # L_ans [B]

        def ablated(slot, h=h, loss_fn=loss_fn):
            erase = -h * (jnp.arange(t) == slot)[None, :, None]
            return loss_fn((erase,))[1][0]

        losses = jax.lax.map(ablated, slots, batch_size=chunk)  # [W, B]
        each.append(jnp.zeros(tokens.shape, losses.dtype).at[:, slots].set(losses.T - base[:, None]))
    return jnp.where(chain_mask & mask, jnp.mean(jnp.stack(each), axis=0), 0.0)


def chain_span(chain_mask: np.ndarray, step: int = 32) -> tuple[int, int]:
    """(start, width): the slots from the batch's first chain token to its last, the width
    rounded up to a multiple of `step` (so that a few programs serve every batch) and kept inside
    the row; chain_mask [B, T] (host). The prompt (often half the row) and the padding past the
    chains are never ablated: their effect is not a chain token's score."""
    t = chain_mask.shape[1]
    cols = np.flatnonzero(np.asarray(chain_mask).any(axis=0))
    if not len(cols):
        return 0, min(step, t)
    width = min(t, -(-(int(cols[-1]) + 1 - int(cols[0])) // step) * step)
    return min(int(cols[0]), t - width), width


def ablation_effect(model, tokens, mask, chain_mask, answer_mask, *, layers, max_answer, chunk: int = 8,
                    span: tuple[int, int] | None = None) -> Array:
    """L_ans with token t's residual h^l_t set to zero, minus L_ans, per token [B, T]: how much
    the answer needs what the token carries at layer l. Exact: one forward per slot of `span`
    ((start, width), `chain_span`; default every slot), `chunk` at a time."""
    start, width = span if span is not None else (0, tokens.shape[1])
    graphdef, state = nnx.split(model)
    return _ablation_impl(graphdef, state, tokens, mask, chain_mask, answer_mask, jnp.int32(start),
                          layers=tuple(layers), max_answer=max_answer, chunk=chunk, width=width)


@functools.partial(jax.jit, static_argnums=(0,))
def _attention_impl(graphdef, state, tokens, mask, chain_mask, answer_mask):
    model = nnx.merge(graphdef, state)
    out = model.forward(tokens, mask=mask, with_logits=False, keep_attention=True)
    probs = [p.astype(jnp.float32) for p in out.attention]  # [B, K, G, T, T] per layer
    mean = jnp.mean(jnp.stack([p.mean(axis=(1, 2)) for p in probs]), axis=0)  # [B, T(query), T(key)]
    queries = (answer_mask & mask).astype(jnp.float32)
    mass = jnp.einsum("bq,bqk->bk", queries, mean) / jnp.maximum(queries.sum(-1, keepdims=True), 1.0)
    return jnp.where(chain_mask & mask, mass, 0.0)


def answer_attention(model, tokens, mask, chain_mask, answer_mask) -> Array:
    """The attention the answer's tokens pay each token, averaged over answer tokens, heads and
    layers, per token [B, T] (CRISP-style attention mass)."""
    graphdef, state = nnx.split(model)
    return _attention_impl(graphdef, state, tokens, mask, chain_mask, answer_mask)


@functools.partial(jax.jit, static_argnums=(0,))
def _self_info_impl(graphdef, state, tokens, mask):
    model = nnx.merge(graphdef, state)
    return predictive_stats(model.forward(tokens, mask=mask).logits, tokens, mask)[1]


def self_information(model, tokens, mask) -> Array:
    """-log p(x_t given x_<t) under `model`, per token [B, T] (zero at slot 0 and padding)."""
    graphdef, state = nnx.split(model)
    return _self_info_impl(graphdef, state, tokens, mask)


__all__ = ["ablation_effect", "answer_attention", "chain_span", "midpoints", "path_attribution", "self_information"]
