"""One NNX decoder for llama / qwen2 / qwen3 / gemma3, with a KV cache and residual taps.

Shapes: B batch, T new tokens, S cache slots, D hidden, H query heads, K kv heads, Dh head dim.

Sequences are addressed by *slot* (index along T, or along S in the cache) and *position*
(the RoPE position, per row). Padding is a `mask` of valid slots, so left- and right-padded
batches both work: a query attends to valid keys in earlier-or-equal slots, and local
(sliding) layers additionally need ``q_pos - k_pos < window``.
"""

from __future__ import annotations

import math
from typing import Mapping

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxcot.models.config import SLIDING, ModelConfig
from jaxcot.models.layers import (
    FEW_ROWS,
    Linear,
    RMSNorm,
    activation,
    apply_rope,
    few_rows_dot,
    rope_inv_freq,
    rope_tables,
)
from jaxcot.sharding import constrain_batch

Array = jax.Array
_NEG = -1e30


@flax.struct.dataclass
class KVCache:
    """Per-layer keys [B, K, Dh, S] and values [B, K, S, Dh] (kv-head major, the layouts attention's
    two matmuls read without a transpose: keys are stored transposed), slot
    positions [B, S], slot validity [B, S], and ``end`` (int32 scalar): the next slot to write.
    A pytree: donate it, shard it."""

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    pos: Array
    valid: Array
    end: Array

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        k_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)
        v_shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        return cls(
            k=tuple(jnp.zeros(k_shape, dtype) for _ in range(cfg.num_layers)),
            v=tuple(jnp.zeros(v_shape, dtype) for _ in range(cfg.num_layers)),
            pos=jnp.zeros((batch, max_len), jnp.int32),
            valid=jnp.zeros((batch, max_len), bool),
            end=jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.pos.shape[1]


@flax.struct.dataclass
class DecoderOutput:
    """logits [B, T, V] float32 (or [B, 1, V] with `logits_at`; None with `with_logits=False`);
    hidden: h^0..h^L, each [B, T, D] (h^0 the scaled embedding, h^L the last block's output
    before the final norm), or None."""

    logits: Array | None
    hidden: tuple[Array, ...] | None = None
    cache: KVCache | None = None
    attention: tuple[Array, ...] | None = None  # per layer [B, K, G, T, T] with `keep_attention`


def attention_bias(
    q_slot: Array, q_pos: Array, k_slot: Array, k_pos: Array, k_valid: Array, window: int | None,
    segments: Array | None = None,
) -> Array:
    """Additive mask [B, 1, Tq, Tk] (0 or -1e30) from slots [Tq]/[Tk], positions [B, Tq]/[B, Tk].

    segments [B, T] (Tq = Tk): packed rows; a query sees only keys of its own segment.
    """
    ok = (k_slot[None, None, :] <= q_slot[None, :, None]) & k_valid[:, None, :]
    if segments is not None:
        ok = ok & (segments[:, :, None] == segments[:, None, :])
    if window is not None:
        ok = ok & (q_pos[:, :, None] - k_pos[:, None, :] < window)
    return jnp.where(ok, 0.0, _NEG)[:, None, :, :].astype(jnp.float32)


class AttentionMask:
    """Additive attention biases [B,1,T,S] and 'has a valid key' rows [B,1,T,1], one pair per
    sliding window (None = full attention), and RoPE (cos, sin) tables [B,T,1,Dh/2] per RoPE
    setting: built once per forward and shared by the layers. With a cache, the keys are the
    cache's first `read_slots` slots as they were before this call (static int; None = all of
    them), then the T new tokens: S = read_slots + T key slots (see `Attention`)."""

    def __init__(self, by_window: dict, rope: dict, read_slots: int | None = None):
        self.by_window = by_window
        self.rope = rope
        self.read_slots = read_slots
        self.kept_probs: list | None = None  # a list: each layer appends its attention probabilities

    def for_window(self, window: int | None) -> tuple[Array, Array]:
        return self.by_window[window]

    def rope_for(self, key) -> tuple[Array, Array]:
        return self.rope[key]


def _bias_and_rows(bias: Array) -> tuple[Array, Array]:
    return bias, bias.max(-1, keepdims=True) > _NEG / 2


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, layer: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, h, k, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        lin = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(d, h * dh, use_bias=cfg.attention_bias, **lin)
        self.k_proj = Linear(d, k * dh, use_bias=cfg.attention_bias, **lin)
        self.v_proj = Linear(d, k * dh, use_bias=cfg.attention_bias, **lin)
        self.o_proj = Linear(h * dh, d, use_bias=False, **lin)
        self.qkv_proj: Linear | None = nnx.data(None)  # q, k, v side by side (`fuse_for_decoding`)
        if cfg.qk_norm:
            norm = dict(eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=param_dtype)
            self.q_norm = RMSNorm(dh, **norm)
            self.k_norm = RMSNorm(dh, **norm)
        else:
            self.q_norm = self.k_norm = None
        local = cfg.layer_type(layer) == SLIDING
        self.window = cfg.sliding_window if local else None
        rope = cfg.rope_local if (local and cfg.rope_local is not None) else cfg.rope
        self.rope_key = (rope, dh)  # static; the Decoder builds one cos/sin table per distinct key
        self.num_heads, self.num_kv_heads, self.head_dim = h, k, dh
        self.scale = cfg.attn_scale
        self.dtype = dtype

    def __call__(
        self,
        x: Array,
        positions: Array,
        mask: "AttentionMask",
        kv: tuple[Array, Array] | None,
        write_at: Array | None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        """x [B,T,D] -> ([B,T,D], updated (keys, values) or None). kv: a layer's cache, keys
        [B,K,Dh,S] and values [B,K,S,Dh]; the new ones go to slots write_at .. write_at+T-1.
        mask: the decoder's additive biases, built once per forward (see `AttentionMask`)."""
        b, t, _ = x.shape
        if self.qkv_proj is not None:
            nq, nk = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
            q, k, v = jnp.split(self.qkv_proj(x), [nq, nq + nk], axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(b, t, self.num_heads, self.head_dim)
        k = k.reshape(b, t, self.num_kv_heads, self.head_dim)
        v = v.reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = mask.rope_for(self.rope_key)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # kv-head-major layouts, keys transposed ([B,K,Dh,T], as the cache holds them) and values
        # [B,K,T,Dh], make both attention einsums plain batched matmuls with no per-step transpose
        # (faster on CPU than contracting across the [B,T,K,Dh] layout: docs/performance.md).
        k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
        new_kv = None
        # Key/value blocks attention reads, in slot order: ([B,K,Dh,S], [B,K,S,Dh]) pairs.
        blocks = [(k, v)]
        if kv is not None:
            ck, cv = kv
            k, v = k.astype(ck.dtype), v.astype(cv.dtype)  # attend to the keys as the cache holds them
            # The cache as it was, then the new keys, rather than the updated cache: reading that
            # gives the update two users; XLA then fuses a copy of it into each, and a decode loop
            # copies every layer's cache every step to keep both in place.
            n = ck.shape[-1] if mask.read_slots is None else mask.read_slots
            if n:
                blocks = [(ck[..., :n], cv[:, :, :n]), (k, v)]
        g = self.num_heads // self.num_kv_heads
        # The scale goes on q [.., T, Dh], not on the scores [.., T, S]: one pass less over the
        # largest tensor, forward and backward.
        q = (q.astype(jnp.float32) * self.scale).astype(q.dtype)
        qg = q.reshape(b, t, self.num_kv_heads, g, self.head_dim).transpose(0, 2, 3, 1, 4)
        scores = jnp.concatenate(
            [jnp.einsum("bkgtd,bkds->bkgts", qg, bk.astype(q.dtype), preferred_element_type=jnp.float32)
             for bk, _ in blocks], axis=-1)
        bias, row_ok = mask.for_window(self.window)  # [B,1,T,S], [B,1,T,1]
        probs = jax.nn.softmax(scores + bias[:, :, None], axis=-1).astype(self.dtype)
        if mask.kept_probs is not None:
            mask.kept_probs.append(probs)  # [B, K, G, T, S], returned by `Decoder.forward(keep_attention=True)`
        out, start = 0.0, 0
        for _, bv in blocks:
            width = bv.shape[2]
            out = out + jnp.einsum("bkgts,bksd->bkgtd", probs[..., start:start + width], bv.astype(self.dtype),
                                   preferred_element_type=jnp.float32)
            start += width
        out = out.astype(self.dtype)
        if kv is not None:
            # XLA:CPU orders operations by data dependence only, so an in-place update of the
            # cache that does not depend on the reads of it above is made on a copy instead
            # (every layer's cache, every decode step). The new keys are made to depend on the
            # attention output, through a comparison that is always false (NaN included).
            after = out[:, :1, :1, :1, :1].reshape(b, 1, 1, 1) > jnp.inf  # [B,1,1,1]
            k, v = jnp.where(after, jnp.zeros((), k.dtype), k), jnp.where(after, jnp.zeros((), v.dtype), v)
            if jnp.ndim(write_at) == 0:
                new_kv = (jax.lax.dynamic_update_slice(ck, k, (0, 0, 0, write_at)),
                          jax.lax.dynamic_update_slice(cv, v, (0, 0, write_at, 0)))
            else:  # `decode_rows`: each row writes its own slot
                new_kv = (jax.vmap(lambda c, x, s: jax.lax.dynamic_update_slice(c, x, (0, 0, s)))(ck, k, write_at),
                          jax.vmap(lambda c, x, s: jax.lax.dynamic_update_slice(c, x, (0, s, 0)))(cv, v, write_at))
        # Rows with no valid key (padding queries) averaged junk; zero them here, on the output,
        # rather than on the [.., T, S] probabilities.
        out = jnp.where(row_ok[:, :, None], out, jnp.zeros((), out.dtype))
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, self.num_heads * self.head_dim)
        return self.o_proj(out), new_kv


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        lin = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(d, f, **lin)
        self.up_proj = Linear(d, f, **lin)
        self.down_proj = Linear(f, d, **lin)
        self.gate_up_proj: Linear | None = nnx.data(None)  # gate and up side by side (`fuse_for_decoding`)
        self.act = activation(cfg.hidden_act)

    def __call__(self, x: Array) -> Array:
        if self.gate_up_proj is not None:
            gate, up = jnp.split(self.gate_up_proj(x), 2, axis=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self.act(gate) * up)


class Block(nnx.Module):
    """Pre-norm block; with `ModelConfig.sandwich_norms` (Gemma) also post-norms after attention
    and after the MLP."""

    def __init__(self, cfg: ModelConfig, layer: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=param_dtype)
        d = cfg.hidden_size
        self.input_layernorm = RMSNorm(d, **norm)
        self.self_attn = Attention(cfg, layer, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp = MLP(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if cfg.sandwich_norms:
            self.post_attention_layernorm = RMSNorm(d, **norm)
            self.pre_feedforward_layernorm = RMSNorm(d, **norm)
            self.post_feedforward_layernorm = RMSNorm(d, **norm)
        else:
            self.post_attention_layernorm = RMSNorm(d, **norm)  # HF's name for the pre-MLP norm
            self.pre_feedforward_layernorm = self.post_feedforward_layernorm = None
        self.sandwich_norms = cfg.sandwich_norms

    def __call__(self, x, positions, mask, kv, write_at):
        """x [B, T, D] -> ([B, T, D], the layer's updated (keys, values) or None): see `Attention`."""
        attn, new_kv = self.self_attn(self.input_layernorm(x), positions, mask, kv, write_at)
        if self.sandwich_norms:
            x = x + self.post_attention_layernorm(attn)
            x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        else:
            x = x + attn
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x, new_kv


class Decoder(nnx.Module):
    """Causal LM. Parameter names follow HF's (``layers[i].self_attn.q_proj.kernel`` ...).

    Entry points: `forward` (training and scoring over whole sequences, with GoGI's
    perturbations and hidden states), `prefill` (writes tokens into a `KVCache`) and
    `decode_step` (one token per row against the cache); calling the model dispatches to
    `forward` or `prefill`. Family differences are `ModelConfig` traits the layers read.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        self.config = cfg
        self.dtype = dtype
        self.embed_tokens = nnx.Param(
            (jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.hidden_size)) * 0.02).astype(param_dtype)
        )
        self.layers = nnx.List(
            [Block(cfg, i, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for i in range(cfg.num_layers)]
        )
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=param_dtype)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else Linear(cfg.hidden_size, cfg.vocab_size, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        )

    def embed(self, tokens: Array) -> Array:
        """tokens [B, T] int -> h^0 [B, T, D] in the compute dtype (Gemma scales by sqrt(D))."""
        h = jnp.take(self.embed_tokens[...], tokens, axis=0).astype(self.dtype)
        if self.config.embed_scale != 1.0:
            h = h * jnp.asarray(self.config.embed_scale, self.dtype)
        return h

    def unembed(self, h: Array) -> Array:
        """Final-normed hidden [..., D] -> float32 logits [..., V]."""
        if self.lm_head is None:
            w = self.embed_tokens[...].astype(self.dtype)
            rows = math.prod(h.shape[:-1])
            if rows <= FEW_ROWS:  # decoding: stream the [V, D] table once
                flat = h.reshape(rows, h.shape[-1]).astype(self.dtype)
                return few_rows_dot(flat, w).reshape(*h.shape[:-1], w.shape[0])
            return jnp.einsum("...d,vd->...v", h.astype(self.dtype), w, preferred_element_type=jnp.float32)
        return self.lm_head(h).astype(jnp.float32)

    def forward(
        self,
        tokens: Array,
        positions: Array | None = None,
        mask: Array | None = None,
        *,
        segments: Array | None = None,
        perturb: Mapping[int, Array] | None = None,
        return_hidden: bool = False,
        logits_at: Array | None = None,
        with_logits: bool = True,
        remat: bool = False,
        keep_attention: bool = False,
    ) -> DecoderOutput:
        """Training and scoring: one pass over whole sequences, no KV cache.

        tokens [B, T] int32; positions [B, T] (default: valid-token count before each slot);
        mask [B, T] bool, True for real tokens (default: all True).
        segments: [B, T] int, packed rows: tokens attend only within their segment; pass
          per-segment `positions` too.
        perturb: {l: [B, T, D]} added to h^l (l = 0 the embedding output, l = i + 1 after
          block i). `jax.grad` with respect to these is GoGI's goal-gradient.
        return_hidden: also return h^0..h^L, each [B, T, D].
        logits_at: [B] int, a slot per row: only those logits are computed ([B, 1, V]).
        with_logits: False skips the final norm and LM head (logits None).
        remat: static bool: a gradient recomputes each block's forward instead of keeping its
          activations for the backward pass (less memory, more compute).
        keep_attention: also return each layer's attention probabilities [B, K, G, T, T]
          (`DecoderOutput.attention`; not with remat).

        Returns a `DecoderOutput`: logits [B, T or 1, V] float32, hidden, no cache.
        """
        t = tokens.shape[1]
        positions, mask = self._inputs(tokens, positions, mask, None)
        perturb = self._perturbations(perturb)
        slots = jnp.arange(t, dtype=jnp.int32)
        attn_mask = self._attention_mask(slots, positions, slots, positions, mask, segments, None)
        if keep_attention:
            if remat:
                raise ValueError("keep_attention reads each layer's attention as it runs: not with remat")
            attn_mask.kept_probs = []
        h, hidden, _ = self._blocks(tokens, positions, attn_mask, perturb, return_hidden, remat=remat)
        kept = tuple(attn_mask.kept_probs) if keep_attention else None
        return DecoderOutput(logits=self._head(h, logits_at, with_logits), hidden=hidden, attention=kept)

    def prefill(
        self,
        tokens: Array,
        cache: KVCache,
        positions: Array | None = None,
        mask: Array | None = None,
        *,
        read_slots: int | None = None,
        segments: Array | None = None,
        perturb: Mapping[int, Array] | None = None,
        return_hidden: bool = False,
        logits_at: Array | None = None,
        with_logits: bool = True,
    ) -> DecoderOutput:
        """Fill a KV cache: the T tokens are written at slots cache.end .. cache.end+T-1 and
        attend to everything valid before them (a prompt into an empty cache, or a chunk
        continuing one: GoGI's perturbed pass after its prompt's prefill).

        tokens [B, T] int32; cache: a `KVCache` (keys [B, K, Dh, S], values [B, K, S, Dh]);
        positions [B, T] (default: continuing each row's count of valid cached tokens);
        mask [B, T] bool (default: all True).
        read_slots: static int: attention reads only the cache's first `read_slots` slots
          besides the new tokens; they must hold every earlier key the new tokens may see
          (default: all S slots). 0 for a prefill into an empty cache; a pass continuing after
          a P-token prefill: P. Its cost then does not grow with the cache's size.
        segments: [B, T] int, packed rows (only with read_slots = 0); perturb, return_hidden,
        logits_at, with_logits: as in `forward`.

        Returns a `DecoderOutput`: logits [B, T or 1, V] float32, hidden, the updated cache.
        """
        if segments is not None and read_slots != 0:
            raise ValueError("segments (packed rows) with a KV cache need read_slots = 0 (a prefill)")
        if read_slots is not None and not 0 <= read_slots <= cache.max_len:
            raise ValueError(f"read_slots={read_slots} outside 0..{cache.max_len} cache slots")
        return self._with_cache(tokens, cache, positions, mask, read_slots=read_slots, segments=segments,
                                perturb=perturb, return_hidden=return_hidden, logits_at=logits_at,
                                with_logits=with_logits)

    def decode_step(self, tokens: Array, cache: KVCache) -> DecoderOutput:
        """One decoding step: tokens [B] int32 (each row's last token) go to slot cache.end, at
        each row's next position, attending to every valid cache slot.

        Returns a `DecoderOutput`: logits [B, 1, V] float32 and the updated cache.
        """
        return self._with_cache(tokens[:, None], cache, None, None)

    def decode_rows(self, tokens: Array, cache: KVCache, slots: Array, positions: Array, *,
                    keep_attention: bool = False) -> DecoderOutput:
        """One decoding step in which each row writes its own cache slot: the form of a cache whose
        rows hold different sequences at different stages (continuous batching, evicted slots).

        tokens [B] int32 go to slot slots[b] of row b at position positions[b] (both [B] int32)
        and attend to every slot `cache.valid` marks (slot order carries no meaning here: a
        slot's place in the sequence is its `pos`), plus themselves. `cache.end` is left as it
        was. keep_attention: also return each layer's attention probabilities [B, K, G, 1, S + 1]
        (the last column: the token itself).

        Returns a `DecoderOutput`: logits [B, 1, V] float32 and the updated cache.
        """
        b, s = cache.pos.shape
        tokens, positions, slots = tokens[:, None], positions.astype(jnp.int32)[:, None], slots.astype(jnp.int32)
        k_slot = jnp.arange(s + 1, dtype=jnp.int32)  # every cached key counts as earlier than the query (slot s)
        k_pos = jnp.concatenate([cache.pos, positions], axis=1)
        k_valid = jnp.concatenate([cache.valid, jnp.ones((b, 1), bool)], axis=1)
        attn_mask = self._attention_mask(k_slot[s:], positions, k_slot, k_pos, k_valid, None, None)
        if keep_attention:
            attn_mask.kept_probs = []
        h, _, (new_k, new_v) = self._blocks(tokens, positions, attn_mask, {}, False, cache=cache, write_at=slots)
        rows = jnp.arange(b)
        out_cache = KVCache(k=new_k, v=new_v, pos=cache.pos.at[rows, slots].set(positions[:, 0]),
                            valid=cache.valid.at[rows, slots].set(True), end=cache.end)
        kept = tuple(attn_mask.kept_probs) if keep_attention else None
        return DecoderOutput(logits=self._head(h, None, True), cache=out_cache, attention=kept)

    def __call__(self, tokens: Array, positions: Array | None = None, mask: Array | None = None, *,
                 cache: KVCache | None = None, read_slots: int | None = None, remat: bool = False,
                 **kw) -> DecoderOutput:
        """`forward` without a cache, `prefill` with one (same arguments; tokens [B, T])."""
        if cache is None:
            if read_slots is not None:
                raise ValueError("read_slots limits the cache slots attention reads; it needs a cache")
            return self.forward(tokens, positions, mask, remat=remat, **kw)
        if remat:
            raise ValueError("remat is for gradients of a cache-free pass; it cannot write a KV cache")
        return self.prefill(tokens, cache, positions, mask, read_slots=read_slots, **kw)

    # -- the steps every entry point shares ----------------------------------------------
    def _with_cache(self, tokens, cache, positions, mask, *, read_slots=None, segments=None, perturb=None,
                    return_hidden=False, logits_at=None, with_logits=True) -> DecoderOutput:
        """`prefill` and `decode_step`: the T new tokens read the cache and are written to it."""
        t = tokens.shape[1]
        positions, mask = self._inputs(tokens, positions, mask, cache)
        perturb = self._perturbations(perturb)
        write_at = cache.end
        q_slot = write_at + jnp.arange(t, dtype=jnp.int32)
        new_pos = jax.lax.dynamic_update_slice(cache.pos, positions, (0, write_at))
        new_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, write_at))
        # Keys: the cache's first n slots as they were (those before `end`), then the new tokens.
        n = cache.max_len if read_slots is None else read_slots
        old = jnp.arange(n, dtype=jnp.int32)
        k_slot = jnp.concatenate([old, q_slot])
        k_pos = jnp.concatenate([cache.pos[:, :n], positions], axis=1)
        k_valid = jnp.concatenate([cache.valid[:, :n] & (old < write_at)[None], mask], axis=1)
        attn_mask = self._attention_mask(q_slot, positions, k_slot, k_pos, k_valid, segments, read_slots)
        h, hidden, (new_k, new_v) = self._blocks(tokens, positions, attn_mask, perturb, return_hidden,
                                                 cache=cache, write_at=write_at)
        logits = self._head(h, logits_at, with_logits)
        out_cache = KVCache(k=new_k, v=new_v, pos=new_pos, valid=new_valid, end=cache.end + t)
        return DecoderOutput(logits=logits, hidden=hidden, cache=out_cache)

    def _inputs(self, tokens: Array, positions: Array | None, mask: Array | None,
                cache: KVCache | None) -> tuple[Array, Array]:
        """(positions [B, T] int32, mask [B, T] bool) with their defaults filled in."""
        b, t = tokens.shape
        if mask is None:
            mask = jnp.ones((b, t), bool)
        mask = mask.astype(bool)
        if positions is None:
            offset = 0 if cache is None else _next_positions(cache)
            positions = offset + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
            positions = jnp.maximum(positions, 0)
        return positions.astype(jnp.int32), mask

    def _perturbations(self, perturb: Mapping[int, Array] | None) -> dict[int, Array]:
        perturb = dict(perturb or {})
        bad = [layer for layer in perturb if not 0 <= layer <= self.config.num_layers]
        if bad:
            raise ValueError(f"perturb layers {bad} out of range 0..{self.config.num_layers}")
        return perturb

    def _attention_mask(self, q_slot, q_pos, k_slot, k_pos, k_valid, segments, read_slots) -> AttentionMask:
        """The biases per distinct sliding window and RoPE tables per distinct RoPE of the layers."""
        windows = {blk.self_attn.window for blk in self.layers}
        ropes = {blk.self_attn.rope_key for blk in self.layers}
        return AttentionMask(
            {w: _bias_and_rows(attention_bias(q_slot, q_pos, k_slot, k_pos, k_valid, w, segments))
             for w in windows},
            {key: rope_tables(q_pos, rope_inv_freq(*key)) for key in ropes},
            read_slots=read_slots,
        )

    def _blocks(self, tokens, positions, attn_mask, perturb, return_hidden, *, cache=None, write_at=None,
                remat=False):
        """Embedding then the block stack: (h^L [B, T, D], h^0..h^L or None, (keys, values) per
        layer written to `cache`, or None without one)."""
        h = self.embed(tokens)
        if 0 in perturb:
            h = h + perturb[0].astype(h.dtype)
        hidden = [h] if return_hidden else None
        new_k, new_v = [], []
        for i, block in enumerate(self.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i])
            h = constrain_batch(h)
            if remat:
                h, nkv = jax.checkpoint(lambda x, blk=block: blk(x, positions, attn_mask, None, None)[0])(h), None
            else:
                h, nkv = block(h, positions, attn_mask, kv, write_at)
            if nkv is not None:
                new_k.append(nkv[0])
                new_v.append(nkv[1])
            if i + 1 in perturb:
                h = h + perturb[i + 1].astype(h.dtype)
            if return_hidden:
                hidden.append(h)
        written = (tuple(new_k), tuple(new_v)) if cache is not None else None
        return h, tuple(hidden) if return_hidden else None, written

    def _head(self, h: Array, logits_at: Array | None, with_logits: bool) -> Array | None:
        """Final norm and LM head of h [B, T, D] -> float32 logits [B, T, V] ([B, 1, V] at
        `logits_at`), or None without logits."""
        if not with_logits:
            return None
        if logits_at is not None:
            h = jnp.take_along_axis(h, logits_at.astype(jnp.int32)[:, None, None], axis=1)
        return self.unembed(self.norm(h))


def _next_positions(cache: KVCache) -> Array:
    """[B, 1]: the number of valid tokens each row already holds in the cache."""
    return jnp.sum(cache.valid, axis=1, dtype=jnp.int32)[:, None]


def init_model(cfg: ModelConfig, seed: int = 0, *, dtype=jnp.float32, param_dtype=jnp.float32) -> Decoder:
    """A randomly initialised model (N(0, 0.02) weights, unit norms)."""
    return Decoder(cfg, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=param_dtype)


class _ShapeOnlyKeys:
    """What `Decoder` asks of its rngs (`params()`), one fixed key each time: the shapes do not
    depend on the keys. Under `eval_shape`, nnx.Rngs' counter update costs time in proportion
    to the trace so far (flax formats an error for `getattr(tracer, "sharding")` on each), which
    made SmolLM2's abstract model several times slower to build (docs/performance.md)."""

    def params(self):
        return jax.random.key(0)


def abstract_model(cfg: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32) -> Decoder:
    """The model with shapes only (no memory), for loaders to fill."""
    return nnx.eval_shape(lambda: Decoder(cfg, rngs=_ShapeOnlyKeys(), dtype=dtype, param_dtype=param_dtype))


def fuse_for_decoding(model: Decoder) -> Decoder:
    """A copy of `model` laid out for decoding on CPU: each block's q/k/v projections become one
    matmul, as do the MLP's gate and up; every Linear's kernel is stored [out, in] with its LoRA
    merged (`Linear.stacked`). The embedding and norms are shared, not copied; the projections'
    weights are (one more copy of them in memory). Same outputs up to float rounding.

    XLA:CPU runs a decode step's few-row matmuls faster so (docs/performance.md). The result is
    for inference: it takes no LoRA and does not export (`save_hf`).
    """
    fused = nnx.clone(model)
    for block in fused.layers:
        attn, mlp = block.self_attn, block.mlp
        if attn.qkv_proj is None:
            attn.qkv_proj = Linear.stacked([attn.q_proj, attn.k_proj, attn.v_proj])
            attn.q_proj = attn.k_proj = attn.v_proj = nnx.data(None)
            attn.o_proj = Linear.stacked([attn.o_proj])
        if mlp.gate_up_proj is None:
            mlp.gate_up_proj = Linear.stacked([mlp.gate_proj, mlp.up_proj])
            mlp.gate_proj = mlp.up_proj = nnx.data(None)
            mlp.down_proj = Linear.stacked([mlp.down_proj])
    if fused.lm_head is not None and not fused.lm_head.out_in:
        fused.lm_head = Linear.stacked([fused.lm_head])
    return fused


def quantize_int8(model: Decoder) -> Decoder:
    """A copy of `model` with int8 weight-only projections, for inference: every Linear (the
    blocks' projections, fused or not, and an untied LM head) holds int8 values and a float32
    scale per output channel (`Linear.quantize_int8`); the embedding, the norms and a tied
    unembedding stay as they are. The projections then take a quarter of their float32 bytes,
    which is what a memory-bound decode step reads. Activations and accumulation keep the
    model's dtypes. On CPU, XLA converts the int8 kernel to float32 before its dot, so this saves
    memory and not time there (docs/performance.md). Like `fuse_for_decoding`'s copy, it takes
    no LoRA and does not export.
    """
    quantized = nnx.clone(model)
    for lin in [node for _, node in nnx.iter_graph(quantized) if isinstance(node, Linear)]:
        lin.quantize_int8()
    return quantized


__all__ = [
    "Decoder", "DecoderOutput", "KVCache", "attention_bias", "init_model", "abstract_model", "fuse_for_decoding",
    "quantize_int8",
]
