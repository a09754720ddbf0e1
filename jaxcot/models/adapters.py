"""LoRA adapters as PEFT folders (adapter_config.json + adapter_model.safetensors).

A trained LoRA student is a few MB of factors over a base checkpoint; exporting only those (in
bf16 if asked) is what makes many students cheap to keep, and the folder is the one `peft` reads:
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)``. Names follow
PEFT's: ``base_model.model.<HF module>.lora_A.weight`` [r, in] and ``.lora_B.weight`` [out, r]
(ours are stored [in, r] and [r, out], so both are transposed), scaling alpha / r (no rsLoRA).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot.models.layers import Linear

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def linear_layers(model: nnx.Module) -> list[tuple[str, Linear]]:
    """('layers/0/self_attn/q_proj', module) for every `Linear`, in graph order."""
    return [("/".join(map(str, path)), m) for path, m in nnx.iter_graph(model) if isinstance(m, Linear)]


def _hf_module(path: str) -> str:
    from jaxcot.models.params import hf_name

    return hf_name(path + "/kernel")[0].removesuffix(".weight")


def is_peft_adapter(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding a PEFT adapter."""
    return os.path.isfile(os.path.join(os.fspath(path), ADAPTER_CONFIG))


def save_peft_adapter(model: nnx.Module, path: str | os.PathLike, *, base_model: str | None = None,
                      dtype=jnp.float32, tokenizer=None) -> str:
    """Write the model's LoRA factors as a PEFT adapter folder (atomically: temp folder + rename).

    base_model: recorded as ``base_model_name_or_path`` (the checkpoint the adapter applies to);
    dtype: of the saved factors (float32 or bfloat16). Returns the folder's path.
    """
    from safetensors.numpy import save_file

    chosen = [(p, m) for p, m in linear_layers(model) if m.lora_a is not None]
    if not chosen:
        raise ValueError("the model has no LoRA adapters to export (trained with method 'full'?)")
    ranks = {int(m.lora_a.shape[1]) for _, m in chosen}
    scales = {m.lora_scale for _, m in chosen}
    drops = {m.lora_dropout.rate if m.lora_dropout is not None else 0.0 for _, m in chosen}
    if len(ranks) > 1 or len(scales) > 1:
        raise ValueError(f"PEFT's adapter config holds one rank and alpha; this model's adapters have ranks "
                         f"{sorted(ranks)} and scales {sorted(scales)}")
    (rank,), (scale,) = ranks, scales
    np_dtype = jnp.dtype(dtype)
    tensors = {}
    for p, m in chosen:
        module = _hf_module(p)
        a = np.asarray(jax.device_get(m.lora_a[...]), np.float32).T
        b = np.asarray(jax.device_get(m.lora_b[...]), np.float32).T
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a.astype(np_dtype))
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b.astype(np_dtype))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": max(drops),
        "target_modules": sorted({p.rsplit("/", 1)[-1] for p, _ in chosen}),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }
    from jaxcot.io import atomic_folder

    path = os.fspath(path)
    with atomic_folder(path) as tmp:
        save_file(tensors, os.path.join(tmp, ADAPTER_WEIGHTS), metadata={"format": "pt"})
        with open(os.path.join(tmp, ADAPTER_CONFIG), "w") as f:
            json.dump(config, f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path


def read_adapter_config(path: str | os.PathLike) -> dict:
    """The adapter folder's config, checked to be a LoRA jaxcot can apply."""
    file = os.path.join(os.fspath(path), ADAPTER_CONFIG)
    with open(file) as f:
        config = json.load(f)
    for key, want in (("peft_type", "LORA"), ("use_rslora", False), ("use_dora", False), ("bias", "none"),
                      ("fan_in_fan_out", False)):
        if config.get(key, want) != want:
            raise ValueError(f"{file}: {key} = {config[key]!r}; jaxcot applies plain LoRA ({key} = {want!r})")
    if config.get("modules_to_save"):
        raise ValueError(f"{file}: modules_to_save {config['modules_to_save']} (fully trained copies) "
                         "is not supported; jaxcot applies LoRA factors only")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{file}: per-module rank_pattern / alpha_pattern is not supported")
    return config


def apply_peft_adapter(model: nnx.Module, path: str | os.PathLike, *, param_dtype=jnp.float32) -> list[str]:
    """Attach the adapter folder's LoRA factors to `model` (in place); returns the adapted paths.

    Every tensor of the adapter must find its layer, with the shapes the layer needs: a missing
    or misshapen one is an error naming it.
    """
    from safetensors.numpy import load_file

    path = os.fspath(path)
    config = read_adapter_config(path)
    file = os.path.join(path, ADAPTER_WEIGHTS)
    tensors = load_file(file)
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    layers = {_hf_module(p): (p, m) for p, m in linear_layers(model)}
    adapted, rngs = [], nnx.Rngs(0)
    modules = sorted({k.removeprefix(_PREFIX).rsplit(".lora_", 1)[0] for k in tensors})
    for module in modules:
        if module not in layers:
            raise ValueError(f"{file}: adapter tensors for {module!r}, which this model does not have")
        p, m = layers[module]
        a = tensors.get(f"{_PREFIX}{module}.lora_A.weight")
        b = tensors.get(f"{_PREFIX}{module}.lora_B.weight")
        if a is None or b is None:
            raise ValueError(f"{file}: {module} has only one of lora_A / lora_B")
        want_a, want_b = (rank, m.in_features), (m.out_features, rank)
        if a.shape != want_a or b.shape != want_b:
            raise ValueError(f"{file}: {module} lora_A {a.shape} / lora_B {b.shape}, expected {want_a} / {want_b}")
        m.attach_lora(rank, alpha, rngs=rngs, param_dtype=param_dtype)
        m.lora_a[...] = jnp.asarray(a.T.astype(np.float32), param_dtype)
        m.lora_b[...] = jnp.asarray(b.T.astype(np.float32), param_dtype)
        adapted.append(p)
    return adapted


__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "apply_peft_adapter", "is_peft_adapter", "linear_layers",
    "read_adapter_config", "save_peft_adapter",
]
