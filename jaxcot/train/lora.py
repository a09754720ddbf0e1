"""LoRA on the decoder's linear layers (`Linear.attach_lora`), selected by module name."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jaxcot.models.adapters import linear_layers


def apply_lora(
    model: nnx.Module,
    *,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str],
    seed: int = 0,
    param_dtype=jnp.float32,
) -> list[str]:
    """Attach LoRA factors to every `Linear` whose own name (last path part) is in `targets`.

    A ~ N(0, 1/rank) [in, r] and B = 0 [r, out], so the model's output is unchanged until B
    trains. Returns the paths given adapters; no match is an error naming the available layers.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    layers = linear_layers(model)
    chosen = [(p, m) for p, m in layers if p.rsplit("/", 1)[-1] in set(targets)]
    if not chosen:
        names = sorted({p.rsplit("/", 1)[-1] for p, _ in layers})
        raise ValueError(f"LoRA targets {list(targets)} match no linear layer; available: {names}")
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    for _, m in chosen:
        m.attach_lora(rank, alpha, dropout=dropout, rngs=rngs, param_dtype=param_dtype)
    return [p for p, _ in chosen]


__all__ = ["apply_lora", "linear_layers"]
