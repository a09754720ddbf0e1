"""TPU slice names: `jaxcot plan --topology` (v5e:2x4, v4:2x2x2) <-> gcloud accelerator types
(v5litepod-8, v4-16), the runtime image each is created with and the hosts of a slice.

The table is `jaxcot/assets/tpu_slices.tsv`, which `tpu/common.sh` reads too, so the scripts that
create a slice and the plan that sizes a run name the same slices. No jax here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "tpu_slices.tsv")


@dataclasses.dataclass(frozen=True)
class Generation:
    """One row of the table (see its header comment)."""

    generation: str
    gcloud_prefix: str
    runtime: str
    cores_per_chip: int
    dims: int
    chips_per_host: int
    single_host_chips: int


@functools.cache
def generations() -> dict[str, Generation]:
    """The table's rows by generation name (v4, v5e, v5p, v6e)."""
    with open(TABLE) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    ints = {f.name for f in dataclasses.fields(Generation) if f.type == "int"}
    out = {}
    for row in rows:
        kw = {k: int(v) if k in ints else v for k, v in zip(header, row, strict=True)}
        out[kw["generation"]] = Generation(**kw)
    return out


def _by_prefix(accelerator_type: str) -> tuple[Generation, int]:
    """(the generation, the count after the dash) of a gcloud type such as v5litepod-8."""
    prefix, _, count = accelerator_type.lower().rpartition("-")
    gen = next((g for g in generations().values() if g.gcloud_prefix == prefix), None)
    if gen is None or not count.isdigit() or int(count) % gen.cores_per_chip:
        known = ", ".join(f"{g.gcloud_prefix}-N" for g in generations().values())
        raise ValueError(f"{accelerator_type!r}: not a TPU accelerator type of {known}")
    return gen, int(count)


def chips_of(accelerator_type: str) -> int:
    """The chips of a gcloud type: v4-16 -> 8 (v4 and v5p count TensorCores), v5litepod-8 -> 8."""
    gen, count = _by_prefix(accelerator_type)
    return count // gen.cores_per_chip


def gcloud_type(topology: str) -> str:
    """The gcloud accelerator type of a plan topology: v5e:2x4 -> v5litepod-8, v4:2x2x2 -> v4-16."""
    name, _, shape = topology.lower().partition(":")
    gen = generations().get(name)
    if gen is None:
        raise ValueError(f"{topology!r}: a generation of {sorted(generations())} then ':' and a shape")
    try:
        dims = [int(x) for x in shape.split("x")]
    except ValueError:
        dims = []
    if len(dims) != gen.dims or min(dims) < 1:
        example = "x".join(["2"] * gen.dims)
        raise ValueError(f"{topology!r}: a {gen.generation} shape has {gen.dims} axes, e.g. {name}:{example}")
    return f"{gen.gcloud_prefix}-{math.prod(dims) * gen.cores_per_chip}"


def topology_of(accelerator_type: str) -> str:
    """The plan topology of a gcloud type, in the shape gcloud gives that size by default
    (v5litepod-8 -> v5e:2x4, v4-16 -> v4:2x2x2, v5p-128 -> v5p:4x4x4); sizes of 2^k chips only."""
    gen, _ = _by_prefix(accelerator_type)
    chips = chips_of(accelerator_type)
    if chips & (chips - 1):
        raise ValueError(f"{accelerator_type!r}: {chips} chips is not a power of two; name its topology yourself")
    # Double the last of the shortest axes until the shape holds the chips; 3D slices start at 2x2x1.
    shape = [2, 2, 1] if gen.dims == 3 and chips >= 4 else [1] * gen.dims
    while math.prod(shape) < chips:
        i = max(j for j, d in enumerate(shape) if d == min(shape))
        shape[i] *= 2
    return f"{gen.generation}:{'x'.join(map(str, shape))}"


def runtime_version(accelerator_type: str) -> str:
    """The TPU VM image a slice of this type is created with (tpu/create.sh's default)."""
    return _by_prefix(accelerator_type)[0].runtime


def hosts(accelerator_type: str) -> int:
    """The hosts (TPU VMs) of a slice: v5litepod-8 -> 1, v5litepod-16 -> 4, v4-32 -> 4."""
    gen = _by_prefix(accelerator_type)[0]
    chips = chips_of(accelerator_type)
    return 1 if chips <= gen.single_host_chips else math.ceil(chips / gen.chips_per_host)


__all__ = ["Generation", "chips_of", "gcloud_type", "generations", "hosts", "runtime_version", "topology_of"]
