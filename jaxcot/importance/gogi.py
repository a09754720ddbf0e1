"""Goal-gradient importance (GoGI), predictive entropy and self-information in one jitted pass.

For a batch of ``prompt | chain C | answer A`` sequences (shapes: B rows, T slots, D width,
V vocabulary, L blocks):

- ``L_ans = -sum_{t in A} log p(x_t | x_<t)`` per row (rows are independent, so the batch sum
  is differentiated once);
- a zero perturbation ``delta^l`` [B, T, D] is added to the residual stream ``h^l`` through the
  decoder's ``perturb={l: delta}``; ``g_t = dL_ans / d delta^l_t``; ``GoGI_t = ||g_t||_1``
  (or L2), averaged over layers when several are given, zero outside C;
- predictive entropy ``H_t`` (nats, full vocabulary, float32) of the distribution token t was
  drawn from (logits at slot t-1) and self-information ``-log p(x_t | x_<t)``, from the same
  forward pass (not differentiated).

Only the perturbation is differentiated: the parameters are split off with ``nnx.split`` and
closed over, so the backward pass runs through blocks l+1..L and the answer positions of the
LM head only. Sequences are assumed contiguous within a row (right padding, as `batches.py`
builds them): the prediction for slot t comes from slot t-1.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot.generate.sampling import token_stats
from jaxcot.importance.config import NORMS
from jaxcot.models.decoder import KVCache
from jaxcot.runtime import step_compiler_options

Array = jax.Array


@flax.struct.dataclass
class Scores:
    """Outputs of `gogi_scores`, all float32.

    gogi [B, T] (zero outside the chain mask); entropy [B, T] and self_info [B, T] (zero at slot
    0, at padding, and with `skip_prompt` up to the prompt split: see `gogi_scores`); answer_loss
    [B] (L_ans per row); per_layer [nL, B, T] per-layer GoGI (only with ``per_layer=True``, else
    None).
    """

    gogi: Array
    entropy: Array
    self_info: Array
    answer_loss: Array
    per_layer: Array | None = None


def default_layer(num_layers: int) -> int:
    """l* = round(2/3 * L) (docs/method.md, GoGI): the residual stream after that block."""
    return int(round(2.0 * num_layers / 3.0))


def normalize_layers(layers: int | Sequence[int] | None, num_layers: int) -> tuple[int, ...]:
    """None -> (l*,); an int -> (l,); a sequence -> sorted unique tuple, each in 0..L."""
    if layers is None:
        layers = (default_layer(num_layers),)
    elif isinstance(layers, (int, np.integer)):
        layers = (int(layers),)
    layers = tuple(sorted({int(layer) for layer in layers}))
    bad = [layer for layer in layers if not 0 <= layer <= num_layers]
    if not layers or bad:
        raise ValueError(f"GoGI layers {list(layers)} must be non-empty and within 0..{num_layers}")
    return layers


def _row_stats(logits: Array, targets: Array) -> tuple[Array, Array]:
    """logits [R, V], targets [R] int -> (entropy [R], -log p(target) [R]) float32, as reductions
    over the logits (the [R, V] log-probabilities are never written out)."""
    logp, ent = token_stats(logits, targets)
    return ent, -logp


def _shift_stats(ent: Array, nll: Array, mask: Array) -> tuple[Array, Array]:
    """Per-slot stats of the *next* token [B, T] -> per-token stats [B, T]: slot t gets slot t-1's,
    zero at slot 0 and where the slot or the one before it is masked."""
    ok = mask[:, 1:] & mask[:, :-1]
    zero = jnp.zeros_like(ent[:, :1])
    return (jnp.concatenate([zero, jnp.where(ok, ent[:, :-1], 0.0)], axis=1),
            jnp.concatenate([zero, jnp.where(ok, nll[:, :-1], 0.0)], axis=1))


def _next_tokens(tokens: Array) -> Array:
    """[B, T] -> [B, T]: the token each slot predicts (slot T-1 predicts nothing: 0)."""
    return jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1).astype(jnp.int32)


def predictive_stats(logits: Array, tokens: Array, mask: Array) -> tuple[Array, Array]:
    """Entropy and self-information of each token under the previous slot's distribution.

    logits [B, T, V] float, tokens [B, T] int, mask [B, T] bool ->
    (entropy [B, T], self_info [B, T]) float32, zero at slot 0 and where mask or the previous
    slot's mask is False.
    """
    b, t, v = logits.shape
    ent, nll = _row_stats(logits.reshape(b * t, v), _next_tokens(tokens).reshape(b * t))
    return _shift_stats(ent.reshape(b, t), nll.reshape(b, t), mask)


def head_stats(model, hidden: Array, tokens: Array, mask: Array, *, chunk: int = 2048) -> tuple[Array, Array]:
    """`predictive_stats` of the model's logits, from final-normed hidden [B, T, D], at most
    `chunk` rows (B * T) at a time: a large batch's [B, T, V] logits are never held whole.
    Up to `chunk` rows run as one plain product: splitting them further (a `lax.map` over smaller
    chunks) measured slower on CPU (docs/performance.md), so `chunk` bounds memory, not speed."""
    b, t, d = hidden.shape
    rows = b * t
    nxt = _next_tokens(tokens).reshape(rows)
    if rows <= chunk:
        ent, nll = _row_stats(model.unembed(hidden.reshape(rows, d)), nxt)
    else:
        n = -(-rows // chunk)
        h = jnp.pad(hidden.reshape(rows, d), ((0, n * chunk - rows), (0, 0))).reshape(n, chunk, d)
        ent, nll = jax.lax.map(lambda a: _row_stats(model.unembed(a[0]), a[1]),
                               (h, jnp.pad(nxt, (0, n * chunk - rows)).reshape(n, chunk)))
        ent, nll = ent.reshape(-1)[:rows], nll.reshape(-1)[:rows]
    return _shift_stats(ent.reshape(b, t), nll.reshape(b, t), mask)


def _answer_slots(answer_mask: Array, size: int) -> tuple[Array, Array]:
    """answer_mask [B, T] -> (slots [B, size] int32, valid [B, size] bool): the answer slots of
    each row in order, padded with slot 0 (invalid)."""

    def row(m):
        (idx,) = jnp.nonzero(m, size=size, fill_value=0)
        return idx.astype(jnp.int32), jnp.arange(size) < jnp.sum(m)

    return jax.vmap(row)(answer_mask)


def _gogi_norm(g: Array, norm: str) -> Array:
    g = g.astype(jnp.float32)
    if norm == "l1":
        return jnp.sum(jnp.abs(g), axis=-1)
    return jnp.sqrt(jnp.sum(g * g, axis=-1))


def _loss_fn(model, tokens, mask, answer_mask, labels, layers, max_answer, split=0, remat=False):
    """deltas (one [B, T - split, D] per layer) -> (sum of L_ans, (L_ans [B], entropy, self_info)).

    remat (split 0 only: a pass that reads a KV cache is not recomputed): the backward recomputes
    each block (the same gradients). With weights sharded over fsdp, what lets the pass's memory
    fall with the mesh: otherwise every block's gathered weights are kept for the backward.

    split > 0: no row has a chain or answer token in slots < split. Those slots run first, as a
    prefill into a KV cache outside the differentiated function (causality: they cannot depend on
    a perturbation of later slots), so the backward pass and the entropy's LM head skip them;
    their entropy and self-information are zero, as is the gradient there.
    """
    b, t = tokens.shape
    slots, valid = _answer_slots(answer_mask, max_answer)
    valid = valid & (slots > 0)  # slot 0 has no prediction (rejected in the public functions)
    targets = jnp.take_along_axis(labels, slots, axis=1).astype(jnp.int32)
    pred = jnp.maximum(slots - 1 - split, 0)  # the slot predicting each answer token, within the part
    cache = None
    if split:
        empty = KVCache.init(model.config, b, t, jnp.promote_types(model.dtype, jnp.float32))
        cache = model.prefill(tokens[:, :split], empty, mask=mask[:, :split], read_slots=0, with_logits=False).cache
    part_tokens, part_mask = tokens[:, split:], mask[:, split:]

    def loss_fn(deltas):
        out = model(
            part_tokens, mask=part_mask, cache=cache, read_slots=split or None,  # the prompt's slots only
            perturb=dict(zip(layers, deltas)), return_hidden=True, remat=remat and cache is None,
            with_logits=False,  # the stats and the loss unembed the rows they need themselves
        )
        hn = model.norm(out.hidden[-1])  # [B, T - split, D]
        ent, nll_all = (jnp.pad(x, ((0, 0), (split, 0)))
                        for x in head_stats(model, jax.lax.stop_gradient(hn), part_tokens, part_mask))
        # The loss needs logits only at the slots that predict answer tokens.
        h_ans = jnp.take_along_axis(hn, pred[:, :, None], axis=1)  # [B, A, D]
        logp = jax.nn.log_softmax(model.unembed(h_ans).astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(logp, targets[:, :, None], axis=-1)[..., 0]
        row_loss = jnp.sum(jnp.where(valid, nll, 0.0), axis=1)
        return jnp.sum(row_loss), (row_loss, ent, nll_all)

    return loss_fn


def prompt_split(chain_mask, answer_mask) -> int:
    """The static `split` of `gogi_scores(skip_prompt=True)`: the slot before the earliest chain
    or answer token of any row, rounded down to 0, 16, 24, 32, 48, 64, 96, ... (few programs)."""
    spans = np.asarray(chain_mask, bool) | np.asarray(answer_mask, bool)
    rows = spans.any(axis=1)
    if not rows.any():
        return 0
    first = int(np.argmax(spans[rows], axis=1).min()) - 1
    if first < 16:
        return 0
    power = 1 << (first.bit_length() - 1)  # the largest power of two <= first
    return 3 * power // 2 if 3 * power // 2 <= first else power


def _prepare(model, tokens, mask, answer_mask, labels, max_answer):
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [B, T], got shape {tokens.shape}")
    for name, m in (("mask", mask), ("answer_mask", answer_mask), ("labels", labels)):
        if m is not None and tuple(m.shape) != tuple(tokens.shape):
            raise ValueError(f"{name} has shape {tuple(m.shape)}, tokens {tuple(tokens.shape)}")
    counts = np.asarray(jnp.sum(jnp.asarray(answer_mask, bool), axis=1))
    max_answer = tokens.shape[1] if max_answer is None else int(max_answer)
    if counts.max(initial=0) > max_answer:
        raise ValueError(f"a row has {int(counts.max())} answer tokens, more than max_answer={max_answer}")
    if bool(np.asarray(answer_mask)[:, 0].any()):
        raise ValueError("answer_mask is set at slot 0, which has no prediction: put a prompt before it")
    labels = tokens if labels is None else jnp.asarray(labels, jnp.int32)
    return tokens, jnp.asarray(mask, bool), jnp.asarray(answer_mask, bool), labels, max_answer


def _gradients_impl(graphdef, state, tokens, mask, answer_mask, labels, *, layers, max_answer, split=0, remat=False):
    model = nnx.merge(graphdef, state)
    answer_mask = answer_mask & mask
    loss_fn = _loss_fn(model, tokens, mask, answer_mask, labels, layers, max_answer, split, remat)
    dtype = jnp.promote_types(model.dtype, jnp.float32)  # float32, or float64 under x64 tests
    b, t = tokens.shape
    deltas = tuple(jnp.zeros((b, t - split, model.config.hidden_size), dtype) for _ in layers)
    grads, aux = jax.grad(loss_fn, has_aux=True)(deltas)
    return tuple(jnp.pad(g, ((0, 0), (split, 0), (0, 0))) for g in grads), aux


_gradients = jax.jit(_gradients_impl, static_argnums=(0,), static_argnames=("layers", "max_answer"))


def goal_gradients(model, tokens, mask, answer_mask, *, layers=None, labels=None, max_answer=None):
    """The raw goal-gradients dL_ans/d delta^l and the answer loss.

    tokens [B, T] int, mask / answer_mask [B, T] bool; labels [B, T] (default: tokens): the
    target at each answer slot. Returns (grads: one float32 [B, T, D] per layer, in sorted layer
    order; L_ans [B]).
    """
    layers = normalize_layers(layers, model.config.num_layers)
    tokens, mask, answer_mask, labels, max_answer = _prepare(model, tokens, mask, answer_mask, labels, max_answer)
    graphdef, state = nnx.split(model)
    grads, (row_loss, _, _) = _gradients(graphdef, state, tokens, mask, answer_mask, labels, layers=layers,
                                         max_answer=max_answer)
    return grads, row_loss


@functools.partial(jax.jit, static_argnums=(0,))
def _answer_loss(graphdef, state, tokens, mask, answer_mask, labels, perturb):
    model = nnx.merge(graphdef, state)
    layers = tuple(sorted(perturb))
    loss_fn = _loss_fn(model, tokens, mask, answer_mask & mask, labels, layers, tokens.shape[1])
    return loss_fn(tuple(perturb[layer] for layer in layers))[1][0]


def answer_loss(model, tokens, mask, answer_mask, *, perturb=None, labels=None):
    """L_ans [B] = -sum over answer slots of log p(label_t | x_<t), with optional residual
    perturbations {l: [B, T, D]} (the function GoGI differentiates; used for finite differences)."""
    tokens, mask, answer_mask, labels, _ = _prepare(model, tokens, mask, answer_mask, labels, None)
    graphdef, state = nnx.split(model)
    return _answer_loss(graphdef, state, tokens, mask, answer_mask, labels, dict(perturb or {}))


def _scores_impl(graphdef, state, tokens, mask, chain_mask, answer_mask, *, layers, norm, max_answer, per_layer,
                 split, remat=False):
    grads, (row_loss, ent, self_info) = _gradients_impl(
        graphdef, state, tokens, mask, answer_mask, tokens, layers=layers, max_answer=max_answer, split=split,
        remat=remat,
    )
    each = jnp.stack([_gogi_norm(g, norm) for g in grads])  # [nL, B, T]
    each = jnp.where((chain_mask & mask)[None], each, 0.0)
    return Scores(
        gogi=jnp.mean(each, axis=0), entropy=ent, self_info=self_info, answer_loss=row_loss,
        per_layer=each if per_layer else None,
    )


@functools.cache
def scores_program():
    """The jitted pass `gogi_scores` runs (`.lower(...)` gives its cost analysis), built on first
    use: its XLA options depend on the backend (`step_compiler_options`: on CPU no YNNPACK
    fusions, whose pipelines cost time on every program's first call and gain nothing after it;
    docs/performance.md), which importing this module must not start."""
    return jax.jit(_scores_impl, static_argnums=(0,),
                   static_argnames=("layers", "norm", "max_answer", "per_layer", "split", "remat"),
                   compiler_options=step_compiler_options())


def gogi_scores(
    model,
    tokens: Array,
    mask: Array,
    chain_mask: Array,
    answer_mask: Array,
    *,
    layers: int | Sequence[int] | None = None,
    norm: str = "l1",
    max_answer: int | None = None,
    per_layer: bool = False,
    skip_prompt: bool = True,
    remat: bool = False,
) -> Scores:
    """GoGI [B, T], entropy [B, T], self-information [B, T] and L_ans [B] from one forward pass.

    model: a `Decoder`. tokens [B, T] int32; mask [B, T] bool (right-padded rows);
    chain_mask / answer_mask [B, T] bool: the C and A spans. layers: one layer l (h^l, 0 = the
    embedding output) or several (their GoGI is averaged); default round(2/3 L). norm: 'l1' or
    'l2'. max_answer: a static bound on answer tokens per row (compiles a smaller LM-head
    backward; default T). per_layer: also return each layer's scores [nL, B, T]. skip_prompt:
    the slots before every row's chain and answer (`prompt_split`) run as a prefill that is not
    differentiated and not unembedded: entropy and self-information come back zero there (GoGI
    is zero outside C anyway); the same scores elsewhere, for less work (more, the longer the
    prompts). remat: the backward recomputes each block of a pass with no prompt prefill (the same
    scores; less memory, most where the weights are sharded over fsdp: see `_loss_fn`).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    layers = normalize_layers(layers, model.config.num_layers)
    if tuple(chain_mask.shape) != tuple(tokens.shape):
        raise ValueError(f"chain_mask has shape {tuple(chain_mask.shape)}, tokens {tuple(tokens.shape)}")
    tokens, mask, answer_mask, _, max_answer = _prepare(model, tokens, mask, answer_mask, None, max_answer)
    graphdef, state = nnx.split(model)
    split = prompt_split(chain_mask, answer_mask) if skip_prompt else 0
    return scores_program()(
        graphdef, state, tokens, mask, jnp.asarray(chain_mask, bool), answer_mask, layers=layers, norm=norm,
        max_answer=max_answer, per_layer=per_layer, split=split, remat=remat,
    )


__all__ = [
    "NORMS", "Scores", "answer_loss", "default_layer", "goal_gradients", "gogi_scores", "head_stats",
    "normalize_layers", "predictive_stats", "prompt_split",
]
