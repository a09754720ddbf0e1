"""Load a GGUF file (llama.cpp format) into the NNX decoder.

Tensors are dequantized to float32 by the `gguf` package (after `dequantize` a weight is
[out, in], HF's layout) and renamed to our canonical HF names, so the all-or-nothing
`build_model` does the rest. What llama.cpp's converter (`convert_hf_to_gguf.py`) changed is
undone here, the same way transformers' own GGUF loader does
(`transformers/modeling_gguf_pytorch_utils.py`):

- llama: Q and K rows are permuted per head (interleaved RoPE halves); q with n_head, k with
  n_kv_head. Llama-3 RoPE scaling is stored as a ``rope_freqs`` tensor, not as metadata.
- gemma3: every ``*norm.weight`` was stored as ``w + 1`` (llama.cpp's RMSNorm multiplies by the
  stored weight; Gemma's by ``1 + w``), so 1 is subtracted.
- qwen2 / qwen3: stored as is.
"""

from __future__ import annotations

import math
import os
import re
import struct
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxcot.models.config import FULL, SLIDING, ModelConfig, RopeConfig
from jaxcot.models.decoder import Decoder
from jaxcot.models.layers import rope_inv_freq
from jaxcot.sharding import PARAM_RULES

# GGUF `general.architecture` -> jaxcot family.
ARCHITECTURES = {"llama": "llama", "gemma3": "gemma3", "qwen2": "qwen2", "qwen3": "qwen3"}

_COMMON = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
}
# Per-block GGUF tensor -> HF module, per family. In gemma3 `ffn_norm` is the pre-MLP norm and
# `post_attention_norm` the norm after attention; in the others `ffn_norm` is HF's
# post_attention_layernorm (the norm before the MLP).
_BLOCK = {
    "llama": {**_COMMON, "ffn_norm": "post_attention_layernorm"},
    "qwen2": {**_COMMON, "ffn_norm": "post_attention_layernorm"},
    "qwen3": {**_COMMON, "ffn_norm": "post_attention_layernorm"},
    "gemma3": {
        **_COMMON,
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
}
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)$")
# Metadata-only tensors: consumed into the config, never loaded as parameters.
_ROPE_FREQS = "rope_freqs.weight"


class GGUFError(ValueError):
    """A GGUF file jaxcot cannot load; the message names the file and the key or tensor."""


def hf_tensor_name(gguf_name: str, family: str) -> str | None:
    """GGUF tensor name -> our canonical HF name ('model.layers.3.self_attn.q_proj.weight'), or None."""
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if not m or m.group(2) not in _BLOCK[family]:
        return None
    return f"model.layers.{m.group(1)}.{_BLOCK[family][m.group(2)]}.{m.group(3)}"


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of a Q or K weight [n_head*Dh, in] (or bias [n_head*Dh]).

    llama.cpp: ``w.reshape(n_head, 2, Dh//2, ...).swapaxes(1, 2)``; this is its inverse.
    """
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# -- metadata ------------------------------------------------------------------------------------


class _Meta:
    """A GGUF file's metadata ({key: value}), with errors naming the file and key."""

    def __init__(self, metadata: dict[str, Any], source: str):
        self.fields = metadata
        self.source = source

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def need(self, key: str) -> Any:
        if key not in self.fields:
            raise GGUFError(f"{self.source}: missing metadata key {key!r}")
        return self.fields[key]


def _llama3_rope(theta: float, head_dim: int, factors: np.ndarray, source: str) -> RopeConfig:
    """A Llama-3 `RopeConfig` reproducing llama.cpp's ``rope_freqs`` (per-frequency divisors)."""
    factors = np.asarray(factors, np.float64)
    base = rope_inv_freq(RopeConfig(theta=theta), head_dim)
    if factors.shape != base.shape:
        raise GGUFError(f"{source}: tensor {_ROPE_FREQS!r} has shape {factors.shape}, expected {base.shape}")
    factor = float(factors.max())
    if factor <= 1.0 + 1e-6:
        return RopeConfig(theta=theta)

    def fits(rope: RopeConfig) -> bool:
        return np.allclose(base / rope_inv_freq(rope, head_dim), factors, rtol=1e-4, atol=1e-5)

    standard = RopeConfig(theta=theta, kind="llama3", factor=factor)  # Llama 3.x defaults
    if fits(standard):
        return standard
    # Only the two wavelength bounds matter; recover them from the factors.
    x = 1.0 / (2 * math.pi / base)  # 1 / wavelength
    ones, scaled = np.isclose(factors, 1.0, rtol=1e-4), np.isclose(factors, factor, rtol=1e-4)
    mid = ~(ones | scaled)
    s = (1.0 / factors[mid] - 1.0 / factor) / (1.0 - 1.0 / factor)  # smooth in (0, 1), linear in x
    lo_x = x[scaled].max() if scaled.any() else 0.0
    hi_x = x[ones].min() if ones.any() else 2 * x.max()
    if mid.sum() >= 2:
        a, b = np.polyfit(x[mid], s, 1)
        x_low, x_high = -b / a, (1 - b) / a
    elif mid.sum() == 1:
        x_low = (lo_x + x[mid][0]) / 2
        x_high = x_low + (x[mid][0] - x_low) / s[0]
    else:
        x_low, x_high = lo_x + (hi_x - lo_x) / 3, lo_x + 2 * (hi_x - lo_x) / 3
    if x_low > 0 and x_high > x_low:
        low_wavelen, high_wavelen = 1.0 / x_low, 1.0 / x_high
        fitted = RopeConfig(theta=theta, kind="llama3", factor=factor, low_freq_factor=1.0,
                            high_freq_factor=low_wavelen / high_wavelen, original_max_position=low_wavelen)
        if fits(fitted):
            return fitted
    raise GGUFError(f"{source}: tensor {_ROPE_FREQS!r} does not match any Llama-3 RoPE scaling")


def _rope(meta: _Meta, arch: str, head_dim: int, rope_freqs: np.ndarray | None) -> RopeConfig:
    theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if rope_freqs is not None:
        if kind not in ("none", None):
            raise GGUFError(f"{meta.source}: both {_ROPE_FREQS!r} and rope scaling type {kind!r}")
        return _llama3_rope(theta, head_dim, rope_freqs, meta.source)
    if kind in ("none", None):
        return RopeConfig(theta=theta)
    if kind == "linear":
        return RopeConfig(theta=theta, kind="linear", factor=float(meta.need(f"{arch}.rope.scaling.factor")))
    raise GGUFError(f"{meta.source}: unsupported RoPE scaling type {kind!r} ({arch}.rope.scaling.type)")


def _gemma3_layers(meta: _Meta, n_layers: int) -> tuple[str, ...]:
    """llama.cpp's gemma3 rule: with a sliding window, layer i is local unless i % 6 == 5
    (a `sliding_window_pattern` key overrides: an int period or one bool per layer)."""
    pattern = meta.get("gemma3.attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        if len(pattern) != n_layers:
            raise GGUFError(f"{meta.source}: sliding_window_pattern has {len(pattern)} entries for {n_layers} layers")
        return tuple(SLIDING if p else FULL for p in pattern)
    period = int(pattern)
    return tuple(SLIDING if period and i % period < period - 1 else FULL for i in range(n_layers))


def gguf_config(metadata: dict[str, Any], tensor_names: set[str], source: str,
                rope_freqs: np.ndarray | None = None) -> ModelConfig:
    """A `ModelConfig` from GGUF metadata (``{arch}.*`` and ``tokenizer.ggml.*`` keys)."""
    meta = _Meta(metadata, source)
    arch = meta.need("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{source}: unsupported GGUF architecture {arch!r}; supported: {sorted(ARCHITECTURES)}")
    family = ARCHITECTURES[arch]
    hidden = int(meta.need(f"{arch}.embedding_length"))
    n_layers = int(meta.need(f"{arch}.block_count"))
    n_heads = int(meta.need(f"{arch}.attention.head_count"))
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_heads))
    head_dim = int(meta.get(f"{arch}.attention.key_length") or meta.get(f"{arch}.rope.dimension_count")
                   or hidden // n_heads)
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = len(tokens) if tokens else meta.get(f"{arch}.vocab_size")
    if not vocab:
        raise GGUFError(f"{source}: no tokenizer.ggml.tokens or {arch}.vocab_size to size the vocabulary")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    common = dict(
        family=family,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(meta.need(f"{arch}.feed_forward_length")),
        num_layers=n_layers,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        rms_norm_eps=float(meta.need(f"{arch}.attention.layer_norm_rms_epsilon")),
        max_position_embeddings=int(meta.get(f"{arch}.context_length", 8192)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=None if eos is None else int(eos),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )
    if family == "gemma3":
        window = int(meta.get("gemma3.attention.sliding_window", 0) or 0)
        layer_types = _gemma3_layers(meta, n_layers) if window else ()
        scale = meta.get("gemma3.attention.scale")
        if scale:
            qpas = 1.0 / float(scale) ** 2
        elif n_layers == 62:  # llama.cpp: Gemma 3 27B scales by hidden/heads, the others by head_dim
            qpas = float(hidden // n_heads)
        else:
            qpas = float(head_dim)
        local = RopeConfig(theta=float(meta.get("gemma3.rope.freq_base_swa", 10000.0)))
        return ModelConfig(
            **{**common, "qk_norm": True},
            rope=_rope(meta, arch, head_dim, rope_freqs),
            rope_local=local,
            layer_types=layer_types,
            sliding_window=window if SLIDING in layer_types else None,
            query_pre_attn_scalar=qpas,
            hidden_act="gelu_pytorch_tanh",
        )
    return ModelConfig(**common, rope=_rope(meta, arch, head_dim, rope_freqs), hidden_act="silu")


# -- loading -------------------------------------------------------------------------------------


def load_gguf(path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, mesh: Mesh | None = None,
              rules=PARAM_RULES) -> Decoder:
    """Load a GGUF file (llama / gemma3 / qwen2 / qwen3) into a `Decoder`, every tensor dequantized.

    Weights are dequantized to float32, then cast to `param_dtype` and placed by `rules` on `mesh`
    (default: one device). A missing, unexpected or misshapen tensor is an error naming it.
    """
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    from jaxcot.models.gguf_file import read_gguf

    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such GGUF file")
    try:
        file = read_gguf(source)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise GGUFError(f"{source}: not a readable GGUF file ({e})") from e
    tensors = file.tensors

    def dequant(name: str) -> np.ndarray:
        qtype = GGMLQuantizationType(tensors[name].ggml_type)
        try:
            return np.asarray(dequantize(file.raw(name), qtype), np.float32)
        except NotImplementedError as e:
            raise GGUFError(f"{source}: tensor {name!r} has unsupported type {qtype.name}") from e

    rope_freqs = dequant(_ROPE_FREQS) if _ROPE_FREQS in tensors else None
    cfg = gguf_config(file.metadata, set(tensors), source, rope_freqs)

    names: dict[str, str] = {}  # canonical HF name -> GGUF name
    unknown = []
    for gname in tensors:
        if gname == _ROPE_FREQS:
            continue
        hf = hf_tensor_name(gname, cfg.family)
        if hf is None:
            unknown.append(gname)
        else:
            names[hf] = gname
    if unknown:
        raise GGUFError(f"{source}: unexpected tensors for the {cfg.family} model: {sorted(unknown)[:10]}")

    def get(hf: str) -> np.ndarray:
        gname = names[hf]
        w = dequant(gname)
        if cfg.family == "llama" and (".attn_q." in gname or ".attn_k." in gname):
            heads = cfg.num_heads if ".attn_q." in gname else cfg.num_kv_heads
            if w.shape[0] != heads * cfg.head_dim:
                raise GGUFError(f"{source}: tensor {gname!r} has {w.shape[0]} rows, expected {heads} heads "
                                f"x {cfg.head_dim}")
            w = unpermute_qk(w, heads)
        elif cfg.family == "gemma3" and gname.endswith("norm.weight"):
            w = w - 1.0
        return w

    from jaxcot.models.params import build_model

    return build_model(cfg, get, names.keys(), source=source, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                       rules=rules)


__all__ = ["ARCHITECTURES", "GGUFError", "gguf_config", "hf_tensor_name", "load_gguf", "unpermute_qk"]
