"""Building blocks: linear (with optional LoRA), RMSNorm, RoPE, activations.

Numerics: norms, RoPE and activations run in float32 whatever the compute dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot.models.config import RopeConfig

Array = jax.Array


class Linear(nnx.Module):
    """y = x @ kernel (+ bias) (+ LoRA: dropout(x) @ lora_a @ lora_b * alpha / rank).

    ``kernel`` is [in, out] (HF stores [out, in]). LoRA factors, when attached, are
    ``nnx.LoRAParam`` so that optimizers and filters can tell them from base weights.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = False,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.in_features, self.out_features = in_features, out_features
        self.dtype = dtype
        self.kernel = nnx.Param(
            (jax.random.normal(rngs.params(), (in_features, out_features)) * init_std).astype(param_dtype)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        # nnx.data: these slots hold Variables / a Module once LoRA is attached (not static fields).
        self.lora_a: nnx.LoRAParam | None = nnx.data(None)
        self.lora_b: nnx.LoRAParam | None = nnx.data(None)
        self.lora_scale: float = 0.0
        self.lora_dropout: nnx.Dropout | None = nnx.data(None)

    def attach_lora(self, rank: int, alpha: float, *, dropout: float = 0.0, rngs: nnx.Rngs, param_dtype=jnp.float32):
        """Add LoRA factors: A ~ N(0, 1/rank) [in, r], B = 0 [r, out], so the output is unchanged."""
        self.lora_a = nnx.LoRAParam(
            (jax.random.normal(rngs.params(), (self.in_features, rank)) / math.sqrt(rank)).astype(param_dtype)
        )
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, self.out_features), param_dtype))
        self.lora_scale = float(alpha) / float(rank)
        self.lora_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def merged_kernel(self) -> Array:
        """kernel + scale * A @ B in float32 (the base kernel when no LoRA is attached)."""
        k = self.kernel[...].astype(jnp.float32)
        if self.lora_a is None:
            return k
        return k + self.lora_scale * (self.lora_a[...].astype(jnp.float32) @ self.lora_b[...].astype(jnp.float32))

    def __call__(self, x: Array) -> Array:
        """x: [..., in] -> [..., out] in the compute dtype."""
        lead = x.shape[:-1]
        # As a 2-D [N, in] matmul: XLA:CPU turns the weight gradient of a [B, T, in] dot into
        # transposes plus a slow dot (3x the backward time of the 2-D form on a 2M model).
        xc = x.astype(self.dtype).reshape(-1, self.in_features)
        # Accumulate in float32 whatever the compute dtype: more exact, and XLA:CPU runs a bf16 dot
        # with a float32 result 2.5x faster than one with a bf16 result (SmolLM2's MLPs, 8 rows).
        y = jnp.dot(xc, self.kernel[...].astype(self.dtype), preferred_element_type=jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        if self.lora_a is not None:
            xl = self.lora_dropout(xc) if self.lora_dropout is not None else xc
            low = jnp.dot(xl, self.lora_a[...].astype(self.dtype), preferred_element_type=jnp.float32)
            y = y + jnp.dot(low.astype(self.dtype), self.lora_b[...].astype(self.dtype),
                            preferred_element_type=jnp.float32) * jnp.float32(self.lora_scale)
        return y.astype(self.dtype).reshape(*lead, self.out_features)


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis in float32; scale (offset + w) with offset 1 for Gemma."""

    def __init__(self, dim: int, *, eps: float, offset: float = 0.0, param_dtype=jnp.float32):
        self.eps, self.offset = eps, offset
        init = jnp.zeros((dim,)) if offset else jnp.ones((dim,))
        self.weight = nnx.Param(init.astype(param_dtype))

    def __call__(self, x: Array) -> Array:
        """x: [..., dim] -> same shape and dtype."""
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (y * (self.offset + self.weight[...].astype(jnp.float32))).astype(x.dtype)


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> np.ndarray:
    """Inverse frequencies [head_dim // 2] (float64 numpy, static), with linear or Llama-3 scaling."""
    inv = 1.0 / (rope.theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if rope.kind == "linear":
        return inv / rope.factor
    if rope.kind == "llama3":
        low_wavelen = rope.original_max_position / rope.low_freq_factor
        high_wavelen = rope.original_max_position / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (rope.original_max_position / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, smoothed, scaled)
    return inv


def rope_tables(positions: Array, inv_freq: np.ndarray) -> tuple[Array, Array]:
    """(cos, sin) [B, T, 1, Dh/2] float32 for positions [B, T] int: computed once per forward and
    shared by every layer with the same RoPE (the transcendentals cost ~8% of a small model's
    forward on CPU when each layer recomputes them)."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [B,T,Dh/2]
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate halves (HF convention). x: [B, T, H, Dh]; cos, sin: `rope_tables` [B, T, 1, Dh/2]
    -> same shape and dtype as x."""
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def activation(name: str):
    """The MLP gate activation by its HF name, computed in float32."""
    if name in ("silu", "swish"):
        fn = jax.nn.silu
    elif name in ("gelu_pytorch_tanh", "gelu_tanh"):
        fn = lambda v: jax.nn.gelu(v, approximate=True)  # noqa: E731
    elif name == "gelu":
        fn = lambda v: jax.nn.gelu(v, approximate=False)  # noqa: E731
    else:
        raise ValueError(f"unsupported activation {name!r}")
    return lambda v: fn(v.astype(jnp.float32)).astype(v.dtype)
