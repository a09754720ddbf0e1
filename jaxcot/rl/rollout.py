"""Rollouts: the policy as a plain decoder for the compiled sampler, the questions of each step,
and a rollout batch laid out as the update step's arrays.

Weights reach the sampler without a host copy: `make_policy_export` is a jitted function from the
trained state (LoRA factors + frozen base, or all parameters) to the state of a plain `Decoder`
(LoRA merged into the kernels, no dropout), placed by the same sharding rules, so the sampler
reads device arrays the update step produced. The rollout and the update can use different
shardings of the same mesh: the export's `out_shardings` are the sampler's.

Several processes (`jax.distributed`): the update runs on the mesh over every host's devices, and
each process samples its share of a step's rollouts on its own devices of that mesh
(`rollout_mesh`), so the export hands every process the whole policy on its own devices
(device to device, `make_policy_export`); `share_rows` then gives every process every row of the
step (tokens, rewards) exactly as sampled, and `place_batch` builds the update's global arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from jaxcot.generate.sampler import PROMPT_BUCKET_STEPS
from jaxcot.models.adapters import linear_layers
from jaxcot.models.decoder import abstract_model
from jaxcot.shapes import bucket_length
from jaxcot.sharding import AXES, make_mesh, tree_shardings


def rollout_mesh(mesh: Mesh, process: int | None = None) -> Mesh:
    """Where process `process` (default: this one) samples: `mesh` itself for one process; else
    that process's devices of `mesh` as a (data, fsdp, tensor) mesh, keeping as much of `mesh`'s
    tensor and fsdp axes as its devices divide into (the rest on data)."""
    if jax.process_count() == 1:
        return mesh
    process = jax.process_index() if process is None else process
    devices = [d for d in mesh.devices.flat if d.process_index == process]
    tensor = math.gcd(mesh.shape["tensor"], len(devices))
    fsdp = math.gcd(mesh.shape["fsdp"], len(devices) // tensor)
    return make_mesh(-1, fsdp, tensor, devices=devices)


def _hosts_mesh(mesh: Mesh) -> Mesh:
    """Every process's `rollout_mesh` stacked along a leading 'hosts' axis: a sharding that names
    only AXES holds one whole copy per process, laid out on its devices as on its rollout mesh."""
    per_process = [rollout_mesh(mesh, p).devices for p in range(jax.process_count())]
    if len({m.shape for m in per_process}) > 1:
        raise ValueError(f"the processes hold different numbers of the mesh's devices: "
                         f"{[m.size for m in per_process]}")
    return Mesh(np.stack(per_process), ("hosts", *AXES))


def _local_copy(x: jax.Array, local: NamedSharding) -> jax.Array:
    """This process's copy of `x` (laid out on `_hosts_mesh` as `local` says) as an array on
    `local`'s mesh alone: the same device buffers, nothing copied."""
    by_device = {s.device: s.data for s in x.addressable_shards}
    return jax.make_array_from_single_device_arrays(x.shape, local, [by_device[d] for d in local.mesh.devices.flat])


def make_policy_export(graphdef, model_config, mesh, *, dtype, param_dtype, sampler_mesh: Mesh | None = None):
    """`export(params, frozen) -> Decoder`: the current policy as a plain decoder (LoRA merged),
    its parameters computed by one jitted program on `mesh` (the update's) and placed on
    `sampler_mesh` (default `mesh`). A `sampler_mesh` of this process's devices alone
    (`rollout_mesh`, several processes) gets its own whole copy of the policy, resharded device
    to device."""
    plain_graphdef, plain_state = nnx.split(abstract_model(model_config, dtype=dtype, param_dtype=param_dtype))
    shardings = tree_shardings(plain_state.to_pure_dict(), mesh)
    local = None if sampler_mesh is None or sampler_mesh is mesh else tree_shardings(plain_state.to_pure_dict(),
                                                                                      sampler_mesh)

    def merged_state(params, frozen):
        model = nnx.merge(graphdef, params, frozen)  # a fresh object: folding LoRA in touches nothing else
        for _, linear in linear_layers(model):
            if linear.lora_a is not None:
                linear.kernel[...] = linear.merged_kernel().astype(linear.kernel[...].dtype)
        return nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))).to_pure_dict()

    compiled = jax.jit(merged_state, out_shardings=shardings)
    if local is None:
        return lambda params, frozen: nnx.merge(plain_graphdef, compiled(params, frozen))
    hosts = _hosts_mesh(mesh)
    on_hosts = jax.tree.map(lambda s: NamedSharding(hosts, s.spec), local)

    def export(params, frozen):
        state = jax.device_put(compiled(params, frozen), on_hosts)
        return nnx.merge(plain_graphdef, jax.tree.map(_local_copy, state, local))

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
    t = bucket_length(max(len(p) + len(c) for p, c in zip(prompts, completions)), min_bucket, PROMPT_BUCKET_STEPS)
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
    """The batch's arrays on the mesh (rows over the batch axes), in one transfer. Several
    processes: every process holds the whole batch and gives each of its devices that device's rows."""
    if jax.process_count() == 1:
        return jax.device_put({k: jnp.asarray(v) for k, v in arrays.items()}, {k: shardings[k] for k in arrays})
    return {k: jax.make_array_from_callback(v.shape, shardings[k], lambda idx, v=v: v[idx]) for k, v in arrays.items()}


def share_rows(own: Sequence[int], arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Every process's rows, on every process: arrays [len(own), ...] hold this process's rows
    `own` (indices into the step's `n` rows; each row is one process's); returns arrays [n, ...]
    of all n rows in order, bit for bit as their processes computed them (any dtype: the rows
    travel as bytes)."""
    full = {}
    for k, a in arrays.items():
        full[k] = np.zeros((n, *a.shape[1:]), a.dtype)
        full[k][list(own)] = a
    if jax.process_count() == 1:
        if sorted(own) != list(range(n)):
            raise ValueError(f"one process must hold all {n} rows, it holds {len(own)}")
        return full
    from jax.experimental import multihost_utils

    mine = np.zeros((n, 1), np.uint8)
    mine[list(own)] = 1
    parts = [mine] + [np.ascontiguousarray(v).reshape(n, -1).view(np.uint8) for v in full.values()]
    gathered = np.asarray(multihost_utils.process_allgather(np.concatenate(parts, axis=1)))  # [P, n, bytes]
    owners = gathered[:, :, 0].astype(int)
    if not (owners.sum(axis=0) == 1).all():
        raise ValueError(f"each of the {n} rows must be one process's; owners per row: {owners.sum(axis=0).tolist()}")
    rows = gathered[owners.argmax(axis=0), np.arange(n), 1:]
    out, at = {}, 0
    for k, v in full.items():
        width = v[:1].reshape(1, -1).view(np.uint8).shape[1]
        out[k] = np.ascontiguousarray(rows[:, at:at + width]).view(v.dtype).reshape(v.shape)
        at += width
    return out


__all__ = ["RolloutArrays", "make_policy_export", "place_batch", "rollout_arrays", "rollout_mesh", "share_rows",
           "step_questions", "zeros_like_rows"]
