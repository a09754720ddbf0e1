"""Compiled programs kept for reuse, each under a typed key of the static settings it was built for.

A compiled XLA program is fixed to its static settings: argument shapes and dtypes, the mesh, the
model's structure, the options its function closes over. A `ProgramCache` holds programs under a
frozen dataclass per kind of program whose fields are exactly those settings, so two calls get the
same program only when all of them agree (a setting missing from the key would hand one call a
program built for another), and a cache shared by several users (the generators of students of
one base model) compiles each program once for all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class TreeSignature:
    """What a compiled program fixes of a pytree of arrays it takes (a model's parameters): the
    (shape, dtype name, sharding) of every leaf, in tree order (`of`). A key field for such a
    tree; its hash is computed once, since a key is hashed on every lookup and a model has
    hundreds of leaves."""

    leaves: tuple
    _hash: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash(self.leaves))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, tree: Any) -> TreeSignature:
        import jax
        import numpy as np

        return cls(tuple((tuple(x.shape), np.dtype(x.dtype).name, getattr(x, "sharding", None))
                         for x in jax.tree_util.tree_leaves(tree)))


def _frozen_dataclass(key: Any) -> bool:
    params = getattr(type(key), "__dataclass_params__", None)
    return dataclasses.is_dataclass(key) and not isinstance(key, type) and bool(params and params.frozen)


class ProgramCache(Generic[T]):
    """Compiled programs by key: a frozen dataclass instance (hashable, compared field by field)
    whose fields are every static setting its program depends on.

    `get_or_compile(key, build)` returns the program under `key`, calling `build()` (no arguments;
    it compiles) and keeping its result the first time that key is asked for. `len(cache)`: the
    programs compiled and held; iterating yields their keys, in the order they were compiled.
    """

    def __init__(self) -> None:
        self._programs: dict[Any, T] = {}

    def get_or_compile(self, key: Any, build: Callable[[], T]) -> T:
        """The program under `key`, built by `build()` on its first use (a TypeError for a key
        that is not a frozen dataclass instance)."""
        program = self._programs.get(key)
        if program is None:
            if not _frozen_dataclass(key):
                raise TypeError(f"a program key is a frozen dataclass instance, got {type(key).__name__}")
            program = self._programs[key] = build()
        return program

    @staticmethod
    def given(cache: "ProgramCache | None", where: str) -> "ProgramCache":
        """`cache`, or a new one for None; anything else is a TypeError naming `where`."""
        if cache is None:
            return ProgramCache()
        if not isinstance(cache, ProgramCache):
            raise TypeError(f"{where}: cache must be a jaxcot.programs.ProgramCache (programs keyed by their "
                            f"settings), got {type(cache).__name__}")
        return cache

    def __len__(self) -> int:
        return len(self._programs)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._programs))

    def __contains__(self, key: Any) -> bool:
        return key in self._programs

    def values(self) -> list[T]:
        """The programs held, in the order they were compiled."""
        return list(self._programs.values())

    def clear(self) -> None:
        """Drop every program (the next use of each key compiles again)."""
        self._programs.clear()


__all__ = ["ProgramCache", "TreeSignature"]
