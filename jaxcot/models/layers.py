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

# A matmul of at most this many rows is a decode step's: memory-bound, it streams the kernel.
FEW_ROWS = 64


def few_rows_dot(x: Array, w: Array) -> Array:
    """x [N, in] (N <= FEW_ROWS) times an [out, in] matrix w -> float32 [N, out], as the [out, N]
    product then transposed: XLA:CPU then streams w row by row (the barrier keeps the transpose
    from being folded back into the dot), which is faster than x @ [in, out] for the tied
    unembedding and the fused projections (docs/performance.md)."""
    return jax.lax.optimization_barrier(jnp.einsum("oi,ri->or", w, x, preferred_element_type=jnp.float32)).T


class QuantScale(nnx.Variable):
    """Per-output-channel float32 scales [out] of an int8 kernel (`Linear.quantize_int8`)."""


class Linear(nnx.Module):
    """y = x @ kernel (+ bias) (+ LoRA: dropout(x) @ lora_a @ lora_b * alpha / rank).

    ``kernel`` is [in, out] (HF stores [out, in]), or [out, in] with ``out_in=True``: the layout
    `jaxcot.models.fuse_for_decoding` builds, faster for few rows on CPU (see `__call__`). LoRA
    factors, when attached, are ``nnx.LoRAParam`` so that optimizers and filters can tell them
    from base weights. kernel / bias: initial values (default: N(0, init_std) and zeros).
    After `quantize_int8` the kernel is int8 with a `QuantScale` per output channel.
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
        rngs: nnx.Rngs | None = None,
        out_in: bool = False,
        kernel: Array | None = None,
        bias: Array | None = None,
    ):
        self.in_features, self.out_features = in_features, out_features
        self.dtype = dtype
        self.out_in = out_in
        shape = (out_features, in_features) if out_in else (in_features, out_features)
        if kernel is None:
            if rngs is None:
                raise ValueError("Linear needs rngs to initialize its kernel, or a kernel")
            kernel = jax.random.normal(rngs.params(), shape) * init_std
        elif tuple(kernel.shape) != shape:
            raise ValueError(f"Linear kernel of shape {tuple(kernel.shape)}, expected {shape}")
        self.kernel = nnx.Param(kernel.astype(param_dtype))
        if bias is None and use_bias:
            bias = jnp.zeros((out_features,))
        self.bias = None if bias is None else nnx.Param(bias.astype(param_dtype))
        # nnx.data: these slots hold Variables / a Module once LoRA is attached (not static fields).
        self.lora_a: nnx.LoRAParam | None = nnx.data(None)
        self.lora_b: nnx.LoRAParam | None = nnx.data(None)
        self.lora_scale: float = 0.0
        self.lora_dropout: nnx.Dropout | None = nnx.data(None)
        self.kernel_scale: QuantScale | None = nnx.data(None)

    @classmethod
    def stacked(cls, parts: "list[Linear]") -> "Linear":
        """One [out, in] Linear computing the parts' outputs side by side (their LoRA merged).

        parts: Linears with the same in_features -> out_features = the sum of theirs; a part
        without a bias contributes zeros when another has one.
        """
        first = parts[0]
        if any(p.in_features != first.in_features for p in parts):
            raise ValueError(f"stacked Linears need one input size, got {[p.in_features for p in parts]}")
        dtype = first.kernel[...].dtype if first.kernel_scale is None else jnp.float32
        kernel = jnp.concatenate([p.merged_kernel().T.astype(dtype) for p in parts], axis=0)
        bias = None
        if any(p.bias is not None for p in parts):
            bias = jnp.concatenate([
                p.bias[...].astype(dtype) if p.bias is not None else jnp.zeros((p.out_features,), dtype) for p in parts
            ])
        return cls(first.in_features, kernel.shape[0], dtype=first.dtype, param_dtype=dtype, out_in=True,
                   kernel=kernel, bias=bias)

    def quantize_int8(self) -> None:
        """Weight-only int8, in place: kernel = round(kernel / s) in [-127, 127] with one float32
        scale s = max |column| / 127 per output channel; activations, accumulation and the bias
        stay as they were. LoRA, if attached, is merged into the kernel first (and removed)."""
        w = self.merged_kernel()  # [in, out] float32
        amax = jnp.max(jnp.abs(w), axis=0)
        scale = jnp.where(amax > 0, amax / 127.0, 1.0).astype(jnp.float32)
        q = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
        self.kernel = nnx.Param(q.T if self.out_in else q)
        self.kernel_scale = QuantScale(scale)
        self.lora_a = self.lora_b = self.lora_dropout = None
        self.lora_scale = 0.0

    def attach_lora(self, rank: int, alpha: float, *, dropout: float = 0.0, rngs: nnx.Rngs, param_dtype=jnp.float32):
        """Add LoRA factors: A ~ N(0, 1/rank) [in, r], B = 0 [r, out], so the output is unchanged."""
        if self.kernel_scale is not None:
            raise ValueError("LoRA goes on a float kernel, not on one quantized to int8 for inference")
        if self.out_in:
            raise ValueError("LoRA goes on a model's own Linears, not on one fused for decoding ([out, in] kernel)")
        self.lora_a = nnx.LoRAParam(
            (jax.random.normal(rngs.params(), (self.in_features, rank)) / math.sqrt(rank)).astype(param_dtype)
        )
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, self.out_features), param_dtype))
        self.lora_scale = float(alpha) / float(rank)
        self.lora_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def merged_kernel(self) -> Array:
        """kernel + scale * A @ B in float32, [in, out] whatever the layout (the base kernel when no
        LoRA is attached)."""
        k = self.kernel[...].astype(jnp.float32)
        if self.out_in:
            k = k.T
        if self.kernel_scale is not None:
            k = k * self.kernel_scale[...]
        if self.lora_a is None:
            return k
        return k + self.lora_scale * (self.lora_a[...].astype(jnp.float32) @ self.lora_b[...].astype(jnp.float32))

    def __call__(self, x: Array) -> Array:
        """x: [..., in] -> [..., out] in the compute dtype."""
        lead = x.shape[:-1]
        # As a 2-D [N, in] matmul: XLA:CPU turns the weight gradient of a [B, T, in] dot into
        # transposes plus a slow dot (docs/performance.md).
        xc = x.astype(self.dtype).reshape(-1, self.in_features)
        # Accumulate in float32 whatever the compute dtype: more exact, and XLA:CPU runs a bf16 dot
        # with a float32 result faster than one with a bf16 result (docs/performance.md).
        w = self.kernel[...].astype(self.dtype)
        if not self.out_in:
            y = jnp.dot(xc, w, preferred_element_type=jnp.float32)
        elif xc.shape[0] <= FEW_ROWS:
            y = few_rows_dot(xc, w)
        else:
            y = jnp.einsum("ri,oi->ro", xc, w, preferred_element_type=jnp.float32)
        if self.kernel_scale is not None:  # int8 weights: the dot ran on their integer values
            y = y * self.kernel_scale[...]
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
    shared by every layer with the same RoPE (recomputed in each layer, the transcendentals are a
    measurable share of a small model's forward on CPU: docs/performance.md)."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [B,T,Dh/2]
    return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate halves (HF convention). x: [B, T, H, Dh]; cos, sin: `rope_tables` [B, T, 1, Dh/2]
    -> same shape and dtype as x."""
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def _silu(v: Array) -> Array:
    return jax.nn.silu(v.astype(jnp.float32)).astype(v.dtype)


def _gelu_tanh(v: Array) -> Array:
    return jax.nn.gelu(v.astype(jnp.float32), approximate=True).astype(v.dtype)


def _gelu(v: Array) -> Array:
    return jax.nn.gelu(v.astype(jnp.float32), approximate=False).astype(v.dtype)


# Module-level functions, never per-call lambdas: the activation is a static attribute of every
# MLP, so two models of one architecture have equal graph definitions only if it is the same
# object (and a compiled program is shared only between equal graph definitions).
ACTIVATIONS = {"silu": _silu, "swish": _silu, "gelu_pytorch_tanh": _gelu_tanh, "gelu_tanh": _gelu_tanh,
               "gelu": _gelu}


def activation(name: str):
    """The MLP gate activation by its HF name, computed in float32."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}")
    return ACTIVATIONS[name]
