"""Package namespaces that import their modules on first use (PEP 562).

A package's `__init__` that imported its modules eagerly would make importing any one small
module of it (a config, a command's parser) import jax, flax and orbax first, so that even
`jaxcot --help` waited for them (docs/performance.md). Each package lists what it exports and
where, and pays for a module only when one of its names is used.
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable, list[str]]:
    """`(__getattr__, __dir__, __all__)` for `package`, whose `modules` maps a submodule's name
    (relative to the package) to the public names it defines."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
