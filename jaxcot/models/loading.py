"""One entry point for weights: a HF folder or a GGUF file, detected from the path."""

from __future__ import annotations

import os

import jax.numpy as jnp
from jax.sharding import Mesh

from jaxcot.models.decoder import Decoder
from jaxcot.models.names import resolve_model
from jaxcot.sharding import PARAM_RULES


def is_gguf(path: str | os.PathLike) -> bool:
    """Whether `path` names a GGUF file (by its magic bytes, not only its suffix)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def load_model(path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, mesh: Mesh | None = None,
               rules=PARAM_RULES) -> Decoder:
    """A `Decoder` from a HF folder (config.json + safetensors), a ``.gguf`` file, or a PEFT
    adapter folder (its LoRA factors attached to the base model its config names).

    dtype: compute dtype; param_dtype: storage dtype of the weights; mesh: where to place them
    (default: one device), each parameter sharded by `rules`.
    """
    from jaxcot.models.adapters import apply_peft_adapter, is_peft_adapter, read_adapter_config
    from jaxcot.models.gguf import load_gguf
    from jaxcot.models.params import load_hf

    path = resolve_model(path)
    if is_peft_adapter(path):
        base = read_adapter_config(path).get("base_model_name_or_path")
        if not base or not os.path.exists(base):
            raise FileNotFoundError(f"{path}: a PEFT adapter whose base model {base!r} is not a local HF folder or "
                                    "GGUF file; load the base with load_model and apply the adapter to it with "
                                    "jaxcot.models.apply_peft_adapter")
        model = load_model(base, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
        apply_peft_adapter(model, path)
        return model
    if os.path.isdir(path):
        return load_hf(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
    if os.path.isfile(path):
        if not is_gguf(path):
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic) and not a HF folder")
        return load_gguf(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
    raise FileNotFoundError(f"{path}: no such HF model folder or GGUF file")


def model_inputs(model: str, tokenizer: str | None = None) -> dict[str, str]:
    """The files a command's output depends on, for its provenance: the model (and tokenizer),
    hub ids resolved to their cached folders."""
    model = resolve_model(model)
    tokenizer = None if tokenizer is None else resolve_model(tokenizer)
    for path in (model, tokenizer):
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such HF model folder or GGUF file")
    return {"model": model, **({"tokenizer": tokenizer} if tokenizer else {})}


__all__ = ["is_gguf", "load_model", "model_inputs"]
