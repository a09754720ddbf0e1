"""Named extension points: a name maps to a callable, and `package.module:attribute` reaches a
user's own without registering it.

The scorers (`jaxcot.importance.scorers.SCORERS`) and compression rules
(`jaxcot.compress.registry.RULES`) are `Registry` objects. A fork adds to them in one of two ways:

    # in code, before the stage runs
    from jaxcot.importance.scorers import SCORERS
    SCORERS.register("mine", my_scorer)

    # or from a config alone: score.scorers: [gogi, entropy, "my_pkg.scorers:mine"]

No jax here, so a config can check names without starting a backend.
"""

from __future__ import annotations

import importlib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


def is_reference(spec: str) -> bool:
    """Whether `spec` has the shape `package.module:attribute`."""
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr and not attr.startswith(":"))


class Registry(Generic[T]):
    """Names -> entries of one kind (`kind` names it in errors, e.g. "scorer")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, entry: T | str | None = None):
        """Add `entry` under `name` (an existing name is an error); without `entry`, a decorator.
        An entry given as a 'package.module:attribute' string is imported when first used, so a
        built-in whose module needs jax costs nothing until a stage runs it."""
        if entry is None:
            return lambda e: self.register(name, e) or e
        if ":" in name or not name:
            raise ValueError(f"a {self.kind} name may not be empty or hold ':', got {name!r}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def known(self, spec: str) -> bool:
        """Whether `spec` is a registered name or a `module:attribute` reference (not imported)."""
        return spec in self._entries or is_reference(spec)

    def check(self, spec: str) -> None:
        """ValueError unless `known(spec)`; the message lists the registered names."""
        if not isinstance(spec, str) or not self.known(spec):
            raise ValueError(f"unknown {self.kind} {spec!r}: must be one of {self.names()} or "
                             "'package.module:function'")

    def get(self, spec: str) -> T:
        """The entry named `spec`, importing a `module:attribute` reference."""
        self.check(spec)
        if spec in self._entries:
            entry = self._entries[spec]
            if isinstance(entry, str):
                entry = self._entries[spec] = self._import(entry)
            return entry
        return self._import(spec)

    def load(self, spec: str) -> None:
        """`get(spec)` for its errors alone, where `spec` is a 'module:attribute' reference (which
        it imports: a config calls this when it loads, so a missing module fails before any work);
        a registered name is left unimported. The ValueError names the reference and the cause."""
        if spec not in self._entries and is_reference(spec):
            entry = self.get(spec)
            if not callable(entry):
                raise ValueError(f"{self.kind} {spec!r} is a {type(entry).__name__}, not a function")

    def _import(self, spec: str) -> T:
        module, attr = spec.split(":", 1)
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"{self.kind} {spec!r}: cannot import {module!r} ({e}); is the module installed, "
                             "or its folder on PYTHONPATH?") from e
        try:
            return getattr(mod, attr)
        except AttributeError:
            raise ValueError(f"{self.kind} {spec!r}: module {module!r} has no attribute {attr!r}") from None


__all__ = ["Registry", "is_reference"]

