"""MATH grading: does a completion's boxed answer denote the gold one?

Both answers are normalised (`jaxcot.text.latex.normalize_latex`) and compared as strings, then by
structure (matrices entry by entry, unions in any order, tuples and intervals element by element,
sets and lists of solutions in any order, equations by their solutions), then by value
(`jaxcot.text.expressions`). A percentage p% is p/100, and matches the bare numeral p (the sign
omitted). The rules, and the table they are measured on, are in docs/graders.md.
"""

from __future__ import annotations

import re

from jaxcot.text.answers import last_boxed, stated_latex
from jaxcot.text.expressions import numeric_equal, proportional
from jaxcot.text.latex import normalize_latex


def _split_top(s: str, sep: str = ",") -> list[str]:
    """`s` split at `sep` outside brackets and braces."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{\x02":
            depth += 1
        elif c in ")]}\x03":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _brackets(s: str):
    """(open, inner, close) when `s` is one bracketed group like (a,b], \\{a,b\\}; else None."""
    s2 = s.replace("\\{", "\x02").replace("\\}", "\x03")
    if len(s2) >= 2 and s2[0] in "([\x02" and s2[-1] in ")]\x03":
        depth = 0
        for j, c in enumerate(s2):
            depth += c in "([{\x02"
            depth -= c in ")]}\x03"
            if depth == 0 and j < len(s2) - 1:
                return None
        inner = s2[1:-1].replace("\x02", "\\{").replace("\x03", "\\}")
        return s2[0], inner, s2[-1]
    return None


def _matrix(s: str):
    m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", s)
    if not m:
        return None
    return [row.split("&") for row in m.group(1).split("\\\\") if row != ""]


def _same_multiset(pa: list[str], pb: list[str], depth: int) -> bool:
    if len(pa) != len(pb):
        return False
    rest = list(pb)
    for x in pa:
        hit = next((k for k, y in enumerate(rest) if _equal(x, y, depth + 1)), None)
        if hit is None:
            return False
        rest.pop(hit)
    return True


def _matrices_equal(a: str, b: str, depth: int) -> bool | None:
    """Entry by entry when either side is a matrix; None when neither is."""
    ma, mb = _matrix(a), _matrix(b)
    if ma is None and mb is None:
        return None
    return (ma is not None and mb is not None and len(ma) == len(mb)
            and all(len(ra) == len(rb) and all(_equal(x, y, depth + 1) for x, y in zip(ra, rb))
                    for ra, rb in zip(ma, mb)))


def _unions_equal(a: str, b: str, depth: int) -> bool | None:
    """The same intervals in any order when either side is a union; None when neither is."""
    pa, pb = _split_top(a, "\\cup"), _split_top(b, "\\cup")
    return None if len(pa) == len(pb) == 1 else _same_multiset(pa, pb, depth)


def _groups_equal(a: str, b: str, depth: int) -> bool | None:
    """Tuples and intervals element by element (same brackets), sets in any order; None unless
    both sides are bracketed groups with a comma."""
    ba, bb = _brackets(a), _brackets(b)
    if not (ba and bb and ("," in ba[1] or "," in bb[1])):
        return None
    if ba[0] == "\x02" or bb[0] == "\x02":  # sets: order does not matter
        return ba[0] == bb[0] and _same_multiset(_split_top(ba[1]), _split_top(bb[1]), depth)
    pa, pb = _split_top(ba[1]), _split_top(bb[1])
    return (ba[0] == bb[0] and ba[2] == bb[2] and len(pa) == len(pb)
            and all(_equal(x, y, depth + 1) for x, y in zip(pa, pb)))


def _lists_equal(a: str, b: str, depth: int) -> bool | None:
    """Lists of solutions ("1,2") in any order; None when neither side is a list."""
    pa, pb = _split_top(a), _split_top(b)
    return None if len(pa) == len(pb) == 1 else _same_multiset(pa, pb, depth)


_NAME = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?|[a-zA-Z](?:\^\{-1\})?\([a-zA-Z]\)|\\(?:theta|alpha|beta|phi)")


def _equation(s: str) -> tuple[str, str] | None:
    parts = _split_top(s, "=")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def _equations_equal(a: str, b: str, depth: int) -> bool | None:
    """Two equations: the same solutions (`proportional`). An equation naming one side (`y=2x+3`,
    `f(x)=x^2+1`, `f^{-1}(x)=...`, `2x+3=y`) against an expression: its other side against the expression. None
    when neither side is an equation."""
    ea, eb = _equation(a), _equation(b)
    if ea is None and eb is None:
        return None
    if ea is not None and eb is not None:
        return ea == eb or proportional(ea, eb)
    lhs, rhs = ea or eb
    value = rhs if _NAME.fullmatch(lhs) else lhs if _NAME.fullmatch(rhs) else None
    if value is None:
        return False
    return _equal(value, b, depth + 1) if ea is not None else _equal(a, value, depth + 1)


_STRUCTURES = (_matrices_equal, _unions_equal, _groups_equal, _lists_equal, _equations_equal)


def _equal(a: str, b: str, depth: int = 0) -> bool:
    """Normalised prediction `a` against normalised gold `b`: same string, then structure (the first
    of `_STRUCTURES` that applies decides), then a word in any case, then value."""
    if a == b:
        return True
    if not a or not b or depth > 4:
        return False
    for structure in _STRUCTURES:
        verdict = structure(a, b, depth)
        if verdict is not None:
            return verdict
    if re.search(r"\\infty|\\cup|\\cap|[<>]|\\leq|\\geq", a + b):
        return False
    if a.isalpha() and a.lower() == b.lower():
        return True
    return numeric_equal(a, b)


# ---------------------------------------------------------------- percentages and grading

_PERCENT = re.compile(r"(?:\\?%|\\text\{\s*percent\s*\})[\s.$]*$")
_NUMERAL = re.compile(r"-?\d+(?:\.\d+)?")


def _split_percent(ans: str) -> tuple[str, bool]:
    """(the answer without a final percent sign, whether it had one)."""
    m = _PERCENT.search(ans)
    return (ans[:m.start()], True) if m else (ans, False)


def math_equal(pred: str | None, gold: str | None) -> bool:
    """True when a MATH answer (box content) denotes the gold one. A percentage p% is the value
    p/100, and also matches the bare number p written as a numeral (the sign omitted): "10\\%"
    matches "0.1" and "10", "0.5\\%" does not match "\\frac12"."""
    if pred is None or gold is None:
        return False
    (p, p_percent), (g, g_percent) = _split_percent(pred), _split_percent(gold)
    p, g = normalize_latex(p), normalize_latex(g)
    if p_percent == g_percent:
        return _equal(p, g)
    if p_percent:
        return _equal(f"\\frac{{{p}}}{{100}}", g) or bool(_NUMERAL.fullmatch(g)) and _equal(p, g)
    return _equal(p, f"\\frac{{{g}}}{{100}}") or bool(_NUMERAL.fullmatch(p)) and _equal(p, g)


def grade_math(completion: str, gold: str) -> bool:
    """Grade a completion (its stated answer, `stated_latex`) against a gold answer; a gold that
    is a full solution is reduced to its last boxed answer first."""
    gold_ans = last_boxed(gold) if "\\boxed" in gold or "\\fbox" in gold else gold
    return math_equal(stated_latex(completion), gold_ans)


__all__ = ["grade_math", "math_equal"]
