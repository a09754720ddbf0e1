"""Graders: is a completion's final answer the gold one? GSM8K numbers and MATH LaTeX.

The answer is read by `jaxcot.text.answers` (`stated_number`, `stated_latex`); this module
decides equality. The rules, and the table they are measured on, are in docs/graders.md.

GSM8K: numbers compare exactly as fractions after removing commas, currency, units and trailing
zeros ("3/4" == "0.75"); no tolerance (GSM8K golds are exact). A percentage in the completion
also matches its value over 100 ("50%" == "50" or "0.5").

MATH: both sides are normalised (`normalize_latex`: markup, units, degrees, thousands separators,
mixed numbers, repeating decimals, inequalities as intervals, "x \\in", \\pm as two answers) and
compared as strings, then by structure (matrices, unions in any order, tuples and intervals
element by element, sets and lists of solutions in any order, equations), then by value: a small
evaluator keeps exact rationals as fractions (so 1000001 is not 1000000) and computes irrational
closed forms (roots, pi, i, logs) in floats to a relative 1e-10; expressions in variables are
compared at three rational points. A gold decimal is read as a rounding only against a value with
no finite decimal expansion (1/3 matches 0.333; 0.54 never matches 0.5). A percentage p% is p/100,
and matches the bare numeral p (the sign omitted).

`get_grader(name)` is the one look-up of a grader by name.
"""

from __future__ import annotations

import cmath
import importlib
import math
import re
from fractions import Fraction
from typing import Callable

from jaxcot.text.answers import (
    braced,
    clean_number_text,
    last_boxed,
    parse_number,
    stated_latex,
    stated_number,
    stated_text,
)

# ---------------------------------------------------------------- GSM8K


def _percent_in(text: str, number: str) -> bool:
    """True when the last occurrence of `number` in `text` is followed by a percent sign or word."""
    idx = text.rfind(number)
    return idx >= 0 and bool(re.match(r"\s*(?:\\?%|percent)", text[idx + len(number):]))


def gsm8k_equal(pred: str | None, gold: str | None) -> bool:
    """True when two answer strings are the same number. A percentage in `pred` also matches
    its value over 100 ("50%" == "0.5")."""
    if pred is None or gold is None:
        return False
    p, g = parse_number(pred), parse_number(gold)
    if p is None or g is None:
        return clean_number_text(pred).lower() == clean_number_text(gold).lower() != ""
    if p == g:
        return True
    return bool(re.search(r"(?:%|percent)\s*\.?$", pred.strip())) and p / 100 == g


def _words(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def grade_gsm8k(completion: str, gold: str) -> bool:
    """Grade a completion against a GSM8K gold answer ("18", or a full "... #### 18" solution).

    A gold that is not a number ("blue") matches the stated answer's words (`stated_text`, case
    and a final full stop ignored) when they equal it or end with it as whole words."""
    gold_num = stated_number(gold) if "####" in gold else gold
    if gold_num is not None and parse_number(gold_num) is None:
        said, want = _words(stated_text(completion)), _words(gold_num)
        return bool(want) and (said == want or said.endswith(" " + want))
    pred = stated_number(completion)
    if pred is not None and _percent_in(completion, pred):
        pred = pred + "%"
    return gsm8k_equal(pred, gold_num)


# ---------------------------------------------------------------- MATH: normalisation


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


# ---------------------------------------------------------------- MATH: exact evaluation
#
# A value is a Fraction while it is an exact rational (integers, decimals, + - * /, integer powers,
# roots and logarithms that come out rational, factorials, binomials) and a complex float
# otherwise (irrational roots, pi, i, trigonometry).

Value = Fraction | complex

_COMMANDS = ("\\frac", "\\binom", "\\sqrt", "\\pi", "\\cdot", "\\times", "\\div", "\\infty", "\\sin", "\\cos",
             "\\tan", "\\ln", "\\log", "\\exp")
_FLOAT_FUNCTIONS = {"\\sin": cmath.sin, "\\cos": cmath.cos, "\\tan": cmath.tan, "\\ln": cmath.log,
                    "\\exp": cmath.exp}
_MAX_BITS = 100_000  # an exact power larger than this many bits is computed in floats (or overflows)


class _Unparsable(Exception):
    pass


_EVAL_ERRORS = (_Unparsable, ZeroDivisionError, OverflowError, ValueError, RecursionError, TypeError)


def _tokens(s: str) -> list[str]:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c.isspace():
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < len(s) and s[i + 1].isdigit()):
            m = re.match(r"\d*\.?\d+|\d+\.?", s[i:])
            out.append(m.group(0))
            i += len(m.group(0))
        elif c == "\\":
            cmd = next((k for k in sorted(_COMMANDS, key=len, reverse=True) if s.startswith(k, i)), None)
            if cmd is None:
                raise _Unparsable(s)
            out.append(cmd)
            i += len(cmd)
        elif c in "+-*/^(){}[]!_" or c.isalpha():
            out.append(c)
            i += 1
        else:
            raise _Unparsable(s)
    return out


def _int_root(k: int, n: int) -> int | None:
    """The integer r >= 0 with r**n == k, or None."""
    if k < 0:
        return None
    r = math.isqrt(k) if n == 2 else round(k ** (1.0 / n))
    return next((c for c in (r - 1, r, r + 1) if c >= 0 and c ** n == k), None)


def _exact_root(x: Fraction, n: int) -> Fraction | None:
    """The real n-th root of a rational when it is rational (odd roots of negatives included)."""
    if x < 0:
        return -_exact_root(-x, n) if n % 2 and _exact_root(-x, n) is not None else None
    num, den = _int_root(x.numerator, n), _int_root(x.denominator, n)
    return None if num is None or den is None else Fraction(num, den)


def _root(x: Value, n: Value) -> Value:
    """The n-th root (principal; real for an odd root of a negative real), exact when rational."""
    if not (isinstance(n, Fraction) and n.denominator == 1 and n > 0):
        raise _Unparsable("root index")
    n = int(n)
    if isinstance(x, Fraction):
        exact = _exact_root(x, n)
        if exact is not None:
            return exact
        if x < 0 and n % 2:
            return -complex(float(-x) ** (1.0 / n))
    return complex(x) ** (1.0 / n)


def _power(base: Value, exp: Value) -> Value:
    """base ** exp: exact for a rational base and integer exponent (or a rational exponent whose
    root comes out rational), complex float otherwise."""
    if isinstance(exp, Fraction) and exp.denominator == 1 and isinstance(base, Fraction):
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits * abs(exp.numerator) <= _MAX_BITS:
            return base ** exp.numerator
    if isinstance(exp, Fraction) and isinstance(base, Fraction) and exp.denominator <= 12:
        root = _exact_root(base, exp.denominator)
        if root is not None:
            return _power(root, Fraction(exp.numerator))
    if isinstance(exp, Fraction) and exp.denominator == 1 and abs(exp) <= 1000:
        return complex(base) ** int(exp)
    return complex(base) ** complex(exp)


def _log(x: Value, base: Value) -> Value:
    """log_base(x): exact when x is a rational power of a rational base (log_2 8 = 3)."""
    if isinstance(x, Fraction) and isinstance(base, Fraction) and x > 0 and base > 0 and base != 1:
        guess = Fraction(math.log(x) / math.log(base)).limit_denominator(12)
        if _power(base, guess) == x:
            return guess
    return cmath.log(complex(x)) / cmath.log(complex(base))


def _integer(v: Value) -> int:
    if not (isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= 1000):
        raise _Unparsable("not a small non-negative integer")
    return int(v)


class _Eval:
    """Recursive-descent evaluator: sum := term (('+'|'-') term)*; term := unary (op? power)*;
    power := atom '!'* ('^' unary)?; atoms: numbers, i, \\pi, variables, (...), {...}, \\frac{}{},
    \\binom{}{}, \\sqrt[n]{}, \\log_b x, \\ln x, \\sin x, ..."""

    def __init__(self, tokens, env):
        self.t, self.i, self.env = tokens, 0, env

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise _Unparsable(f"expected {want}, got {tok}")
        self.i += 1
        return tok

    def run(self) -> Value:
        v = self.sum()
        if self.peek() is not None:
            raise _Unparsable(self.peek())
        return v

    def sum(self) -> Value:
        v = self.term()
        while self.peek() in ("+", "-"):
            v = v + self.term() if self.take() == "+" else v - self.term()
        return v

    def term(self) -> Value:
        v = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times", "/", "\\div"):
                self.take()
                rhs = self.unary()
                v = v * rhs if tok in ("*", "\\cdot", "\\times") else v / rhs
            elif tok is not None and tok not in ("+", "-", ")", "}", "]", "^", "!", "_"):
                v = v * self.power()  # implicit product: 2\sqrt{3}, 3x
            else:
                return v

    def unary(self) -> Value:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Value:
        base = self.atom()
        while self.peek() == "!":
            self.take()
            base = Fraction(math.factorial(_integer(base)))
        if self.peek() == "^":
            self.take()
            return _power(base, self.unary())
        return base

    def group(self) -> Value:
        self.take("{")
        v = self.sum()
        self.take("}")
        return v

    def log_base(self) -> Value:
        """The base of `\\log_b`: one character unbraced (LaTeX's `\\log_28` is log base 2 of 8)."""
        if self.peek() != "_":
            return Fraction(10)
        self.take()
        tok = self.peek()
        if tok is not None and tok[0].isdigit() and len(tok) > 1:
            self.t[self.i] = tok[1:]
            return Fraction(tok[0])
        return self.atom()

    def atom(self) -> Value:
        tok = self.take()
        if re.fullmatch(r"\d*\.?\d+|\d+\.", tok):
            return Fraction(tok)
        if tok in ("(", "{", "["):
            v = self.sum()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if tok == "\\frac":
            return self.group() / self.group()
        if tok == "\\binom":
            n, k = _integer(self.group()), _integer(self.group())
            return Fraction(math.comb(n, k))
        if tok == "\\sqrt":
            index = Fraction(2)
            if self.peek() == "[":
                self.take()
                index = self.sum()
                self.take("]")
            return _root(self.group(), index)
        if tok == "\\pi":
            return complex(math.pi)
        if tok == "\\log":
            base = self.log_base()
            return _log(self.power(), base)
        if tok in _FLOAT_FUNCTIONS:
            return _FLOAT_FUNCTIONS[tok](complex(self.power()))
        if tok == "i":
            return 1j
        if len(tok) == 1 and tok.isalpha() and tok in self.env:
            return self.env[tok]
        raise _Unparsable(tok)


_POINTS = (Fraction(7, 5), Fraction(-13, 9), Fraction(23, 11))  # rational: polynomial identities stay exact
_REL_TOL = 1e-10  # for values that are not exact rationals (irrational roots, pi)


def _variables(s: str) -> set[str]:
    return {t for t in _tokens(s) if len(t) == 1 and t.isalpha() and t != "i"}


def _environments(names: list[str]) -> list[dict[str, Fraction]]:
    """Values for the variables at which two expressions are compared (one empty one for none)."""
    if not names:
        return [{}]
    return [{n: _POINTS[(k + j) % len(_POINTS)] + Fraction(j, 7) for j, n in enumerate(names)}
            for k in range(len(_POINTS))]


def _evaluate(s: str, env: dict) -> Value:
    return _Eval(_tokens(s), env).run()


def _same_value(a: Value, b: Value) -> bool:
    """Exact rationals compare exactly; otherwise relative to 1e-10 (float noise in closed forms)."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = complex(a), complex(b)
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), 1e-12)


def _terminates(v: Value) -> bool:
    """True for a rational with a finite decimal expansion (denominator 2^a 5^b)."""
    if not isinstance(v, Fraction):
        return False
    den = v.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _rounds_to(value: Value, gold: str) -> bool:
    """A gold decimal with d places read as a rounding: `value` (one with no finite decimal
    expansion: 1/3, sqrt 2, pi) lies within half a unit of its last place."""
    m = re.fullmatch(r"-?\d*\.(\d+)", gold)
    if m is None or _terminates(value) or abs(complex(value).imag) > 1e-12:
        return False
    return abs(complex(value).real - float(Fraction(gold))) <= 0.5 * 10.0 ** -len(m.group(1)) * (1 + 1e-9)


def _numeric_equal(pred: str, gold: str) -> bool:
    """Both sides evaluate to the same value (for the same variables, at every point of
    `_environments`), or `pred` rounds to a decimal gold (`_rounds_to`); False when either side
    cannot be evaluated (or its value overflows a float where one is needed)."""
    try:
        names = _variables(pred) | _variables(gold)
        if _variables(pred) != _variables(gold) or len(names) > 3:
            return False
        values = [(_evaluate(pred, env), _evaluate(gold, env)) for env in _environments(sorted(names))]
        return all(_same_value(p, g) for p, g in values) or (not names and _rounds_to(values[0][0], gold))
    except _EVAL_ERRORS:
        return False


def _proportional(pred: tuple[str, str], gold: tuple[str, str]) -> bool:
    """Two equations `l = r` with the same solutions: l - r of one is a constant non-zero multiple
    of the other's (`x+y=5` and `y=5-x`)."""
    fp, fg = f"({pred[0]})-({pred[1]})", f"({gold[0]})-({gold[1]})"
    try:
        names = _variables(fp)
        if not names or names != _variables(fg):
            return False
        ratios = []
        for env in _environments(sorted(names)):
            vp, vg = _evaluate(fp, env), _evaluate(fg, env)
            if vg == 0 or vp == 0:
                return False
            ratios.append(vp / vg)
        return all(_same_value(r, ratios[0]) for r in ratios)
    except _EVAL_ERRORS:
        return False


# ---------------------------------------------------------------- MATH: structure


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
    """Two equations: the same solutions (`_proportional`). An equation naming one side (`y=2x+3`,
    `f(x)=x^2+1`, `f^{-1}(x)=...`, `2x+3=y`) against an expression: its other side against the expression. None
    when neither side is an equation."""
    ea, eb = _equation(a), _equation(b)
    if ea is None and eb is None:
        return None
    if ea is not None and eb is not None:
        return ea == eb or _proportional(ea, eb)
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
    return _numeric_equal(a, b)


# ---------------------------------------------------------------- MATH: grading

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


Grader = Callable[[str, str], bool]
GRADERS: dict[str, Grader] = {"gsm8k": grade_gsm8k, "math": grade_math}
GRADER_NAMES = ("gsm8k", "math", "math500")  # names get_grader takes besides "module:function"


def get_grader(spec: str | None) -> Grader:
    """`grade(completion, gold) -> bool` by name: "gsm8k" (numbers; also None), "math" or
    "math500" (LaTeX), or "package.module:function" for a grader of your own."""
    if spec is None:
        return grade_gsm8k
    key = spec.lower().replace("-", "").replace("_", "")
    if key in GRADER_NAMES:
        return GRADERS["math" if key == "math500" else key]
    if ":" not in spec:
        raise ValueError(f"grader must be one of {sorted(GRADERS)} or 'module:function', got {spec!r}")
    module, name = spec.split(":", 1)
    return getattr(importlib.import_module(module), name)


__all__ = ["GRADERS", "GRADER_NAMES", "Grader", "get_grader", "grade_gsm8k", "grade_math", "gsm8k_equal", "math_equal",
           "normalize_latex"]
