"""Meshes and PartitionSpec rules shared by loading, generation and training.

Axes: ``data`` (batch), ``fsdp`` (batch and parameter shards), ``tensor`` (heads / MLP width).
One CPU device, 8 simulated ones and a TPU pod run the same code: only the mesh shape changes.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # batch dims shard over both

# (regex on the '/'-joined parameter path, spec for that array). First match wins.
# Kernels are [in, out]: column-parallel layers shard `out` on tensor, row-parallel `in`.
PARAM_RULES: tuple[tuple[str, P], ...] = (
    # The vocabulary axis over tensor x fsdp, the width whole: with the width over fsdp, the
    # lookup and the LM head gathered the whole table (1.25 GiB per copy for Gemma-3's 262k rows)
    # on every device, so the train step's temporaries grew with fsdp (docs/plan.md).
    (r"embed_tokens$", P(("tensor", "fsdp"), None)),
    (r"lm_head/kernel$", P(None, ("tensor", "fsdp"))),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel$", P("fsdp", "tensor")),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/bias$", P("tensor")),
    (r"(o_proj|down_proj)/kernel$", P("tensor", "fsdp")),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj|o_proj|down_proj)/lora_a$", P("fsdp", None)),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/lora_b$", P(None, "tensor")),
    (r"(o_proj|down_proj)/lora_a$", P("tensor", None)),
    (r"(o_proj|down_proj)/lora_b$", P(None, "fsdp")),
    (r".*", P()),  # norms, scalars: replicated
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh; -1 for `data` takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if data == -1:
        if n % (fsdp * tensor):
            raise ValueError(f"{n} devices do not divide into fsdp={fsdp} x tensor={tensor}")
        data = n // (fsdp * tensor)
    if data * fsdp * tensor != n:
        raise ValueError(f"mesh {data}x{fsdp}x{tensor} needs {data * fsdp * tensor} devices, have {n}")
    return Mesh(np.asarray(devices).reshape(data, fsdp, tensor), AXES)


def config_mesh(mc, devices: Sequence | None = None) -> Mesh:
    """The mesh a `jaxcot.config.MeshConfig` describes, over `devices` (default: every device),
    its first `mc.devices` of them where that is set."""
    devices = list(devices if devices is not None else jax.devices())
    return make_mesh(mc.data, mc.fsdp, mc.tensor, devices=devices[: mc.devices or None])


def path_str(path) -> str:
    """A pytree / nnx state path as 'a/b/0/c'."""
    parts = []
    for k in path:
        k = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
        parts.append(str(k))
    if parts and parts[-1] == "value":  # nnx Variable leaves
        parts.pop()
    return "/".join(parts)


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drop axes that do not divide the dimension (tiny test models on 8 devices)."""
    out = []
    for i, ax in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
        if i >= len(shape):
            break
        if ax is None:
            out.append(None)
            continue
        names = ax if isinstance(ax, tuple) else (ax,)
        size = int(np.prod([mesh.shape[a] for a in names]))
        out.append(ax if shape[i] % size == 0 else None)
    return P(*out)


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh, rules=PARAM_RULES) -> P:
    for pattern, spec in rules:
        if re.search(pattern, path):
            return _fit(spec, shape, mesh)
    return P()


def tree_shardings(tree, mesh: Mesh, rules=PARAM_RULES):
    """NamedShardings for every array leaf of a pytree (e.g. an nnx.State), by path rules."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(path_str(path), tuple(x.shape), mesh, rules)),
        tree,
    )


def batch_shards(mesh) -> int:
    """How many shards a batch's leading axis splits into on `mesh` (data x fsdp, the `BATCH`
    axes): a batch's rows must be a multiple of it. `mesh`: a `Mesh` or an abstract mesh."""
    return int(np.prod([mesh.shape[a] for a in BATCH]))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) axis over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def constrain_batch(x):
    """x with its leading (batch) axis over (data, fsdp) and the rest replicated, where a mesh with
    those axes is set (`jax.set_mesh`, as `jaxcot plan` compiles); else x unchanged.

    With the weights sharded over fsdp and nothing said of the activations, XLA's propagation may
    follow the weights into the residual stream (feature axis split over fsdp, batch gathered),
    which makes temporaries grow with fsdp; the constraint at each block boundary keeps each
    device's activations at its own rows, as MaxText and tunix do. Only with fsdp > 1: on a data
    mesh the weights are whole and the constraint measured worse (docs/plan.md)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH) <= set(mesh.axis_names) or mesh.shape["fsdp"] == 1:
        return x
    return jax.lax.with_sharding_constraint(x, P(BATCH, *([None] * (x.ndim - 1))))
