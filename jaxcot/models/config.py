"""`ModelConfig`: one dataclass for the four decoder families jaxcot runs.

Families and their real differences:
- ``llama`` (Llama 3.x, SmolLM2): RMSNorm, RoPE (optional Llama-3 scaling), GQA, SwiGLU.
- ``qwen2`` (Qwen2 / Qwen2.5): as llama plus q/k/v biases.
- ``qwen3``: as llama plus per-head RMSNorm on q and k.
- ``gemma3``: (1 + w) RMSNorm, pre- and post-norms around attention and MLP, embeddings
  scaled by sqrt(d), GeGLU (tanh GELU), ``query_pre_attn_scalar``, interleaved sliding-window
  local layers with their own RoPE base, q/k norms.

The differences are data: `FAMILY_TRAITS` per family, read through `ModelConfig`'s properties
(`norm_offset`, `embed_scale`, `sandwich_norms`) and fields (`qk_norm`, `attention_bias`,
`layer_types` / `sliding_window`, `rope_local`, `query_pre_attn_scalar`, `hidden_act`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from typing import Any

FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")

# HF `model_type` -> jaxcot family.
_MODEL_TYPES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",
}

FULL = "full_attention"
SLIDING = "sliding_attention"

# `ModelConfig.from_hf_json`: what a config.json must state for jaxcot to read it without
# transformers (their defaults differ between the config classes: Qwen2Config's
# num_key_value_heads is 32, LlamaConfig's the number of heads) ...
_JSON_NEEDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")
# ... and, per family, the defaults of transformers 5's config class for the keys it may leave
# out, where they are not hidden_act 'silu', attention_bias False and no pad token.
_JSON_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"bos_token_id": 1, "eos_token_id": 2},
    "qwen2": {"bos_token_id": None, "eos_token_id": None},
    "qwen3": {"bos_token_id": None, "eos_token_id": None},
}


@dataclasses.dataclass(frozen=True)
class FamilyTraits:
    """How a family's decoder differs from Llama's, fixed by the family (`FAMILY_TRAITS`).

    `ModelConfig` exposes them as properties the layers read (they never test the family).
    qk_norm, qkv_bias and sliding_layers are what HF's config of the family implies; a
    `ModelConfig` states its own `qk_norm`, `attention_bias` and `layer_types` fields, which
    `from_hf_config` fills from these.
    """

    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + w): Gemma's (1 + w)
    scale_embeddings: bool = False  # h^0 = embedding * sqrt(D) (Gemma)
    sandwich_norms: bool = False  # norms after attention and before and after the MLP (Gemma)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, Gemma 3)
    qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2)
    sliding_layers: bool = False  # interleaved sliding-window layers with their own RoPE (Gemma 3)


FAMILY_TRAITS = {
    "llama": FamilyTraits(),
    "qwen2": FamilyTraits(qkv_bias=True),
    "qwen3": FamilyTraits(qk_norm=True),
    "gemma3": FamilyTraits(norm_offset=1.0, scale_embeddings=True, sandwich_norms=True, qk_norm=True,
                           sliding_layers=True),
}


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """RoPE for one kind of layer. ``kind``: 'default', 'linear' or 'llama3'."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192

    def __post_init__(self):
        from jaxcot.config import check_range  # (no jax there)

        check_range(self, "theta", 0, lo_open=True)
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            check_range(self, name, 0, lo_open=True)
        check_range(self, "original_max_position", 1)

    @classmethod
    def from_hf(cls, params: dict[str, Any] | None, default_theta: float = 10000.0) -> "RopeConfig":
        if not params:
            return cls(theta=default_theta)
        kind = params.get("rope_type", params.get("type", "default")) or "default"
        theta = float(params.get("rope_theta", default_theta))
        if kind == "default":
            return cls(theta=theta)
        if kind == "linear":
            return cls(theta=theta, kind="linear", factor=float(params["factor"]))
        if kind == "llama3":
            return cls(
                theta=theta,
                kind="llama3",
                factor=float(params["factor"]),
                low_freq_factor=float(params.get("low_freq_factor", 1.0)),
                high_freq_factor=float(params.get("high_freq_factor", 4.0)),
                original_max_position=int(params.get("original_max_position_embeddings", 8192)),
            )
        raise ValueError(f"unsupported RoPE type {kind!r} (supported: default, linear, llama3)")

    def to_hf(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rope_type": self.kind, "rope_theta": self.theta}
        if self.kind == "linear":
            out["factor"] = self.factor
        if self.kind == "llama3":
            out.update(
                factor=self.factor,
                low_freq_factor=self.low_freq_factor,
                high_freq_factor=self.high_freq_factor,
                original_max_position_embeddings=self.original_max_position,
            )
        return out


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = RopeConfig()
    # gemma3 local layers: their own RoPE (base 10k); None = same as `rope`.
    rope_local: RopeConfig | None = None
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    qk_norm: bool = False
    # 'full_attention' / 'sliding_attention' per layer; empty = all full.
    layer_types: tuple[str, ...] = ()
    sliding_window: int | None = None
    query_pre_attn_scalar: float | None = None
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        from jaxcot.config import check_range  # (no jax there)

        if self.family not in FAMILIES:
            raise ValueError(f"unsupported model family {self.family!r}; supported: {FAMILIES}")
        check_range(self, "vocab_size", 0)  # 0: a TrainConfig's random init takes the tokenizer's size
        for name in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "max_position_embeddings"):
            check_range(self, name, 1)
        check_range(self, "rms_norm_eps", 0, lo_open=True)
        check_range(self, "sliding_window", 1, optional=True)
        check_range(self, "query_pre_attn_scalar", 0, lo_open=True, optional=True)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers"
            )
        if any(t not in (FULL, SLIDING) for t in self.layer_types):
            raise ValueError(f"unknown layer type in {self.layer_types}")
        if SLIDING in self.layer_types and not self.sliding_window:
            raise ValueError("sliding_attention layers need sliding_window")

    # -- family traits -------------------------------------------------------------------
    @property
    def traits(self) -> FamilyTraits:
        """The family's `FamilyTraits` (the properties below read them)."""
        return FAMILY_TRAITS[self.family]

    @property
    def norm_offset(self) -> float:
        """RMSNorm multiplies by (norm_offset + w): 1 for Gemma, 0 for the others."""
        return self.traits.norm_offset

    @property
    def embed_scale(self) -> float:
        """The factor on the embedding output h^0: sqrt(D) for Gemma, 1 for the others."""
        return math.sqrt(self.hidden_size) if self.traits.scale_embeddings else 1.0

    @property
    def sandwich_norms(self) -> bool:
        """Blocks norm the attention output and both sides of the MLP (Gemma), not only inputs."""
        return self.traits.sandwich_norms

    @property
    def attn_scale(self) -> float:
        base = self.query_pre_attn_scalar if self.query_pre_attn_scalar else self.head_dim
        return float(base) ** -0.5

    def layer_type(self, i: int) -> str:
        return self.layer_types[i] if self.layer_types else FULL

    @property
    def eos_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.attention_bias else 0)
        norms = (4 if self.sandwich_norms else 2) * d + (2 * self.head_dim if self.qk_norm else 0)
        per_layer = attn + 3 * d * f + norms
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + self.num_layers * per_layer + d + head

    # -- HF conversion -------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf: Any) -> "ModelConfig":
        """From a transformers `PretrainedConfig` (transformers 5: RoPE in `rope_parameters`)."""
        model_type = getattr(hf, "model_type", None)
        if model_type not in _MODEL_TYPES:
            raise ValueError(
                f"unsupported architecture model_type={model_type!r}; supported: {sorted(_MODEL_TYPES)}"
            )
        if model_type == "gemma3":  # multimodal wrapper: take its text part
            hf = hf.get_text_config()
        family = _MODEL_TYPES[model_type]
        traits = FAMILY_TRAITS[family]
        if getattr(hf, "use_sliding_window", False) and not traits.sliding_layers:
            raise ValueError(f"{model_type}: use_sliding_window=True is not supported")
        for cap in ("final_logit_softcapping", "attn_logit_softcapping"):
            if getattr(hf, cap, None):
                raise ValueError(f"{model_type}: {cap} is not supported")
        num_heads = hf.num_attention_heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // num_heads
        rope_params = getattr(hf, "rope_parameters", None) or {}
        theta_fallback = float(getattr(hf, "rope_theta", 10000.0) or 10000.0)
        rope_local = None
        if traits.sliding_layers:
            if FULL in rope_params or SLIDING in rope_params:
                rope = RopeConfig.from_hf(rope_params.get(FULL), 1_000_000.0)
                rope_local = RopeConfig.from_hf(rope_params.get(SLIDING), 10_000.0)
            else:
                rope = RopeConfig.from_hf(rope_params or getattr(hf, "rope_scaling", None), theta_fallback)
                rope_local = RopeConfig(theta=float(getattr(hf, "rope_local_base_freq", 10000.0)))
        else:
            if not rope_params:
                rope_params = dict(getattr(hf, "rope_scaling", None) or {})
                rope_params.setdefault("rope_theta", theta_fallback)
            rope = RopeConfig.from_hf(rope_params, theta_fallback)
        layer_types = tuple(getattr(hf, "layer_types", None) or ())
        if not traits.sliding_layers:
            layer_types = ()
        eos = hf.eos_token_id
        if isinstance(eos, list):
            eos = tuple(eos)
        act = getattr(hf, "hidden_activation", None) or getattr(hf, "hidden_act", "silu")
        return cls(
            family=family,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
            rms_norm_eps=float(hf.rms_norm_eps),
            rope=rope,
            rope_local=rope_local,
            max_position_embeddings=int(getattr(hf, "max_position_embeddings", 8192)),
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            attention_bias=traits.qkv_bias or bool(getattr(hf, "attention_bias", False)),
            qk_norm=traits.qk_norm,
            layer_types=layer_types,
            sliding_window=getattr(hf, "sliding_window", None) if SLIDING in layer_types else None,
            query_pre_attn_scalar=getattr(hf, "query_pre_attn_scalar", None) if family == "gemma3" else None,
            hidden_act=act,
            bos_token_id=hf.bos_token_id,
            eos_token_id=eos,
            pad_token_id=getattr(hf, "pad_token_id", None),
        )

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> "ModelConfig":
        """Read `config.json` of a HF folder: itself when the file states every field whose
        default differs between transformers' config classes (`from_hf_json`), else through
        transformers' AutoConfig, which imports torch (seconds of a command's start-up:
        docs/performance.md)."""
        path = os.fspath(path)
        file = os.path.join(path, "config.json")
        if not os.path.exists(file):
            raise FileNotFoundError(f"{path}: no config.json")
        with open(file) as f:
            fast = cls.from_hf_json(json.load(f))
        if fast is not None:
            return fast
        from transformers import AutoConfig

        return cls.from_hf_config(AutoConfig.from_pretrained(path))

    @classmethod
    def from_hf_json(cls, d: dict[str, Any]) -> "ModelConfig | None":
        """From a llama / qwen2 / qwen3 `config.json` dict that states `_JSON_NEEDS` and a RoPE
        theta, as `from_hf_config(AutoConfig...)` reads it; None for any other (AutoConfig's
        defaults then apply). The keys it may leave out default as in transformers 5's config
        classes (`_JSON_DEFAULTS`; tests/test_checkpoint_io.py compares the two paths)."""
        family = d.get("model_type")
        if family not in _JSON_DEFAULTS or any(d.get(k) is None for k in _JSON_NEEDS):
            return None
        if family == "qwen3" and not d.get("head_dim"):  # Qwen3Config's default is 128, not hidden / heads
            return None
        rope = d.get("rope_parameters")
        if rope is not None and not isinstance(rope, dict):
            return None
        if d.get("rope_theta") is None and (rope or {}).get("rope_theta") is None:
            return None
        if rope is not None and any(isinstance(v, dict) for v in rope.values()):  # per layer type
            return None
        fields = {"hidden_act": "silu", "attention_bias": False, "pad_token_id": None, **_JSON_DEFAULTS[family], **d}
        return cls.from_hf_config(types.SimpleNamespace(**fields))

    def to_hf_dict(self) -> dict[str, Any]:
        """A transformers `config.json` dict for this model (used by export)."""
        common = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        if self.family == "gemma3":
            local = self.rope_local or RopeConfig(theta=10000.0)
            return dict(
                common,
                model_type="gemma3_text",
                architectures=["Gemma3ForCausalLM"],
                hidden_activation=self.hidden_act,
                query_pre_attn_scalar=self.query_pre_attn_scalar,
                sliding_window=self.sliding_window or 4096,
                layer_types=list(self.layer_types) or [FULL] * self.num_layers,
                rope_parameters={FULL: self.rope.to_hf(), SLIDING: local.to_hf()},
                attention_bias=self.attention_bias,
            )
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
        out = dict(
            common,
            model_type=self.family,
            architectures=[arch[self.family]],
            hidden_act=self.hidden_act,
            rope_parameters=self.rope.to_hf(),
        )
        if self.family in ("llama", "qwen3"):
            out["attention_bias"] = self.attention_bias
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        d["rope"] = RopeConfig(**d["rope"])
        if d.get("rope_local"):
            d["rope_local"] = RopeConfig(**d["rope_local"])
        d["layer_types"] = tuple(d.get("layer_types") or ())
        if isinstance(d.get("eos_token_id"), list):
            d["eos_token_id"] = tuple(d["eos_token_id"])
        return cls(**d)
