"""The MATH answer normaliser: one canonical string for the many ways LaTeX writes an answer.

`normalize_latex` strips markup, units, degrees and thousands separators, and rewrites mixed
numbers, repeating decimals, inequalities (as intervals), "x \\in" and \\pm (as two answers), so
that answers written differently compare equal as strings or reach `jaxcot.text.compare` in one
shape. The rules are in docs/graders.md.
"""

from __future__ import annotations

import re
from fractions import Fraction

from jaxcot.text.answers import braced


def _replace_group_command(s: str, name: str, fn) -> str:
    """Replace every `\\name{arg}` (nested braces) with fn(arg)."""
    out, i = [], 0
    pat = re.compile(r"\\" + name + r"\s*\{")
    while True:
        m = pat.search(s, i)
        if not m:
            out.append(s[i:])
            return "".join(out)
        content = braced(s, m.end() - 1)
        if content is None:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:m.start()])
        out.append(fn(content))
        i = m.end() + len(content) + 1


def _fix_shorthand(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{x}`, `\\frac{a}2`, `\\binom52`, `\\sqrt2` -> `\\sqrt{2}`."""
    arg = r"(\{(?:[^{}]|\{[^{}]*\})*\}|\\[a-zA-Z]+|[0-9a-zA-Z])"
    prev = None
    while prev != s:
        prev = s
        s = re.sub(r"\\(frac|binom)\s*" + arg + r"\s*" + arg,
                   lambda m: "\\" + m.group(1) + "".join(a if a.startswith("{") else "{" + a + "}"
                                                       for a in m.groups()[1:]), s)
        s = re.sub(r"\\sqrt\s*(?!\[)" + arg,
                   lambda m: "\\sqrt" + (m.group(1) if m.group(1).startswith("{") else "{" + m.group(1) + "}"), s)
    return s


def _drop_text_units(s: str) -> str:
    r"""`5\text{ cm}^2` -> `5`; a lone `\text{east}` -> `east`."""
    def unwrap(content):
        return "\x00" + content + "\x01"

    s = _replace_group_command(s, r"(?:text|textbf|textrm|mbox|mathrm|mathbf)", unwrap)
    # a wrapped chunk beside other content is a unit (when it holds letters): drop it
    stripped = re.sub(r"\x00[^\x00\x01]*[a-zA-Z][^\x00\x01]*\x01(?:\^\{?\d\}?)?", "", s)
    if stripped.strip() and re.search(r"[0-9a-zA-Z\\]", stripped):
        s = stripped
    return s.replace("\x00", "").replace("\x01", "")


_UNIT_TAIL = re.compile(r"(?<=[\d}])\s*(?:(?:square|sq|cubic)\s*)?(?:units?|cm|km|inches|inch|feet|foot|ft|"
                        r"meters?|degrees?|dollars?|cents?|hours?|minutes?|seconds?|days?)(?:\^\{?\d\}?)?\s*$")
_ALTERNATIVES = re.compile(r"\\(?:text|mbox|textrm)\s*\{\s*(?:or|and)\s*\}|\\q?quad")  # "x=1 \text{ or } x=2"
_MIXED_NUMBER = re.compile(r"(?<![\w.}^_)\]])(\d+)\\frac\{(\d+)\}\{(\d+)\}")  # 3\frac{1}{2} is 3 + 1/2
_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\{(\d+)\}")  # 0.1\overline{6} is 1/6
_BOUND = r"([^<>=]+)"
_UPPER = {"<": "(-\\infty,{0})", "\\leq": "(-\\infty,{0}]", ">": "({0},\\infty)", "\\geq": "[{0},\\infty)"}


def _inequality_as_interval(s: str) -> str:
    """`x>3` -> `(3,\\infty)`, `x\\leq3` -> `(-\\infty,3]`, `-2<x\\leq5` -> `(-2,5]`; anything else as is."""
    m = re.fullmatch(r"[a-zA-Z](<|>|\\leq|\\geq)" + _BOUND, s)
    if m and not re.search(r"\\[lg]eq", m.group(2)):
        return _UPPER[m.group(1)].format(m.group(2))
    m = re.fullmatch(_BOUND + r"(<|\\leq)[a-zA-Z](<|\\leq)" + _BOUND, s)
    if m and not re.search(r"\\[lg]eq", m.group(1) + m.group(4)):
        return ("(" if m.group(2) == "<" else "[") + m.group(1) + "," + m.group(4) + (")" if m.group(3) == "<" else "]")
    return s


def _repeating_as_fraction(m: re.Match) -> str:
    """`\\frac{p}{q}` for a repeating decimal a.b\\overline{c} (0.\\overline{3} -> \\frac{1}{3})."""
    whole, fixed, cycle = m.group(1) or "0", m.group(2), m.group(3)
    period = (10 ** len(cycle) - 1) * 10 ** len(fixed)
    value = Fraction(whole + "." + fixed if fixed else whole) + Fraction(int(cycle), period)
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _expand_plus_minus(s: str) -> str:
    """`a\\pm b` -> `a+b,a-b` (the two answers it stands for), when it is the answer's only \\pm."""
    if s.count("\\pm") != 1 or "," in s:
        return s
    return s.replace("\\pm", "+") + "," + s.replace("\\pm", "-")


def normalize_latex(ans: str) -> str:
    """Canonical string form of a MATH answer (see module docstring); '' for None. Percent signs
    are dropped here (`math_equal` reads them first)."""
    if ans is None:
        return ""
    s = str(ans).strip()
    s = s.replace("\n", " ").replace("\\!", "").replace("\\displaystyle", "").replace("{,}", ",")
    s = _ALTERNATIVES.sub(",", s)
    s = re.sub(r"(?<!\\)\\[,;:> ]", " ", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\s*", "", s)
    s = s.replace("\\{", "\x02").replace("\\}", "\x03")  # set braces survive brace stripping
    s = re.sub(r"\\[dt](frac|binom)", r"\\\1", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _drop_text_units(s)
    s = _UNIT_TAIL.sub("", s).strip()
    s = re.sub(r"^\s*\\text\s*", "", s)
    s = s.rstrip(" .")
    s = _fix_shorthand(s)
    s = re.sub(r"\s+", "", s)
    s = _MIXED_NUMBER.sub(r"(\1+\\frac{\2}{\3})", s)
    s = _REPEATING.sub(_repeating_as_fraction, s)
    s = s.replace("\\le", "\\leq").replace("\\leqq", "\\leq").replace("\\ge", "\\geq").replace("\\geqq", "\\geq")
    s = s.replace("\\infinity", "\\infty").replace("+\\infty", "\\infty")
    s = re.sub(r"bmatrix|vmatrix|Bmatrix|matrix\*|smallmatrix", "pmatrix", s)
    s = re.sub(r"^[a-zA-Z]\\in", "", s)  # "x \in [2,5]" -> "[2,5]"
    s = _expand_plus_minus(_inequality_as_interval(s))
    s = re.sub(r"^\((\w)\)$", r"\1", s)  # "(C)" -> "C"
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # ".5" -> "0.5"
    s = re.sub(r"(\d)\.0+(?!\d)", r"\1", s)  # "3.0" -> "3"
    s = re.sub(r"(\d\.\d*?)0+(?!\d)", r"\1", s)  # "2.50" -> "2.5"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"^\{(.*)\}$",
               lambda m: m.group(1) if braced("{" + m.group(1) + "}", 0) == m.group(1) else m.group(0), s)
    return s.replace("\x02", "\\{").replace("\x03", "\\}")


__all__ = ["normalize_latex"]
