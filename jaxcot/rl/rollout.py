"""Rollouts: the policy as a plain decoder for the compiled sampler, the questions of each step,
and a rollout batch laid out as the update step's arrays.

Weights reach the sampler without a host copy: `make_policy_export` is a jitted function from the
trained state (LoRA factors + frozen base, or all parameters) to the state of a plain `Decoder`
(LoRA merged into the kernels, no dropout), placed by the same sharding rules, so the sampler
reads device arrays the update step produced. The rollout and the update can use different
shardings of the same mesh: the export's `out_shardings` are the sampler's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot.generate.sampler import bucket_length
from jaxcot.models.adapters import linear_layers
from jaxcot.models.decoder import abstract_model
from jaxcot.sharding import tree_shardings


def make_policy_export(graphdef, model_config, mesh, *, dtype, param_dtype):
    """`export(params, frozen) -> Decoder`: the current policy as a plain decoder (LoRA merged),
    its parameters computed and placed on `mesh` by one jitted program."""
    plain_graphdef, plain_state = nnx.split(abstract_model(model_config, dtype=dtype, param_dtype=param_dtype))
    shardings = tree_shardings(plain_state.to_pure_dict(), mesh)

    def merged_state(params, frozen):
        model = nnx.merge(graphdef, params, frozen)  # a fresh object: folding LoRA in touches nothing else
        for _, linear in linear_layers(model):
            if linear.lora_a is not None:
                linear.kernel[...] = linear.merged_kernel().astype(linear.kernel[...].dtype)
        return nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))).to_pure_dict()

    compiled = jax.jit(merged_state, out_shardings=shardings)

    def export(params, frozen):
        return nnx.merge(plain_graphdef, compiled(params, frozen))

    return export


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def step_questions(n: int, per_step: int, seed: int, step: int) -> list[int]:
    """The question indices of rollout step `step` (0-based): a seeded permutation of the `n`
    questions per epoch, walked `per_step` at a time (an epoch's tail continues into the next)."""
    return [int(_epoch_order(n, seed, pos // n)[pos % n]) for pos in range(step * per_step, (step + 1) * per_step)]


@dataclasses.dataclass
class RolloutArrays:
    """A rollout batch as host arrays [A, b, T] (A micro-batches of b rows): tokens, mask,
    positions, completion_mask, and advantages [A, b]; the counts of completion tokens and of
    all real tokens (prompt + completion)."""

    arrays: dict[str, np.ndarray]
    completion_tokens: int
    row_tokens: int


def rollout_arrays(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   advantages: Sequence[float], micro_batches: int, *, pad_id: int,
                   min_bucket: int = 16) -> RolloutArrays:
    """Rows of prompt + completion token ids, right-padded to one bucketed length T (few compiled
    shapes), split into `micro_batches` of adjacent rows. Log-probability slots are the tokens'
    own: completion_mask is True at each generated token."""
    n = len(prompts)
    if n != len(completions) or n != len(advantages) or n % micro_batches:
        raise ValueError(f"{n} prompts, {len(completions)} completions, {len(advantages)} advantages: "
                         f"rows must match and split into {micro_batches} micro-batches")
    t = bucket_length(max(len(p) + len(c) for p, c in zip(prompts, completions)), min_bucket)
    tokens = np.full((n, t), pad_id, np.int32)
    mask = np.zeros((n, t), bool)
    cmask = np.zeros((n, t), bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        lp, lc = len(p), len(c)
        if lc == 0:
            raise ValueError(f"completion {i} is empty")
        tokens[i, :lp + lc] = list(p) + list(c)
        mask[i, :lp + lc] = True
        cmask[i, lp:lp + lc] = True
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), (n, t)).copy()
    shape = (micro_batches, n // micro_batches)
    arrays = {
        "tokens": tokens.reshape(*shape, t), "mask": mask.reshape(*shape, t),
        "positions": positions.reshape(*shape, t), "completion_mask": cmask.reshape(*shape, t),
        "advantages": np.asarray(advantages, np.float32).reshape(shape),
    }
    return RolloutArrays(arrays, int(cmask.sum()), int(mask.sum()))


def zeros_like_rows(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Float32 zeros shaped like the batch's token arrays (log-probabilities not needed)."""
    return np.zeros(arrays["tokens"].shape, np.float32)


def place_batch(arrays: dict[str, np.ndarray], shardings: dict) -> dict[str, jax.Array]:
    """The batch's arrays on the mesh (rows over the batch axes), in one transfer."""
    return jax.device_put({k: jnp.asarray(v) for k, v in arrays.items()}, {k: shardings[k] for k in arrays})


__all__ = ["RolloutArrays", "make_policy_export", "place_batch", "rollout_arrays", "step_questions",
           "zeros_like_rows"]
