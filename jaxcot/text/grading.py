"""Graders: is a completion's final answer the gold one? The registry every stage looks graders up in.

`get_grader(name)` is the one look-up of a grader by name ("gsm8k", "math", "math500" or
"module:function"), and `check_grader_name` the one check of such a name in a config. The rules
live beside it, one job a module: `jaxcot.text.gsm8k` (GSM8K numbers), `jaxcot.text.latex` (the
MATH answer normaliser), `jaxcot.text.expressions` (the value of a LaTeX expression) and
`jaxcot.text.compare` (MATH answers by structure, then value). The answer is read by
`jaxcot.text.answers`. The rules, and the table they are measured on, are in docs/graders.md.
"""

from __future__ import annotations

from typing import Callable

from jaxcot.registry import Registry, is_reference
from jaxcot.text.compare import grade_math, math_equal
from jaxcot.text.gsm8k import grade_gsm8k, gsm8k_equal
from jaxcot.text.latex import normalize_latex

Grader = Callable[[str, str], bool]
GRADERS: Registry[Grader] = Registry("grader")
GRADERS.register("gsm8k", grade_gsm8k)
GRADERS.register("math", grade_math)
GRADERS.register("math500", grade_math)
GRADER_NAMES = tuple(GRADERS.names())  # names get_grader takes besides "module:function"


def _key(spec: str) -> str:
    """A grader name as looked up: lower case, without '-' and '_' ("MATH-500" is "math500");
    a 'module:function' reference as given."""
    return spec if is_reference(spec) else spec.lower().replace("-", "").replace("_", "")


def check_grader_name(spec: str | None, *, optional: bool = False, key: str = "grader") -> None:
    """Raise `jaxcot.config.ConfigError` (a ValueError) naming `key` unless `spec` is a name
    `get_grader` takes: one of GRADER_NAMES (any case, '-' and '_' ignored) or 'module:function';
    None passes when `optional`. A 'module:function' is imported here (its error is the ConfigError).
    Configs check their grader with it when they load, before any stage runs, so a typo or a
    missing module fails at once rather than at grading time."""
    from jaxcot.config import check  # here, so grading itself needs nothing beyond the standard library

    check((spec is None and optional) or (isinstance(spec, str) and GRADERS.known(_key(spec))),
          key, f"must be one of {sorted(GRADER_NAMES)} or 'module:function', got {spec!r}")
    if spec is not None:
        try:  # a 'module:function' grader is imported now, so a missing one fails before any work
            GRADERS.load(_key(spec))
        except ValueError as e:
            check(False, key, str(e))


def get_grader(spec: str | None) -> Grader:
    """`grade(completion, gold) -> bool` by name: "gsm8k" (numbers; also None), "math" or
    "math500" (LaTeX), or "package.module:function" for a grader of your own."""
    if spec is None:
        return grade_gsm8k
    return GRADERS.get(_key(spec))


__all__ = ["GRADERS", "GRADER_NAMES", "Grader", "check_grader_name", "get_grader", "grade_gsm8k", "grade_math",
           "gsm8k_equal", "math_equal", "normalize_latex"]
