"""The MATH expression evaluator: the value of a normalised LaTeX expression, exact where it can be.

A value is a Fraction while it is an exact rational (integers, decimals, + - * /, integer powers,
roots and logarithms that come out rational, factorials, binomials), so 1000001 is not 1000000,
and a complex float otherwise (irrational roots, pi, i, logarithms, trigonometry), compared to a
relative 1e-10. Expressions in variables are compared at three rational points. A gold decimal is
read as a rounding only against a value with no finite decimal expansion (1/3 matches 0.333; 0.54
never matches 0.5). `numeric_equal` and `proportional` are what `jaxcot.text.compare` asks.
"""

from __future__ import annotations

import cmath
import math
import re
from fractions import Fraction

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


def numeric_equal(pred: str, gold: str) -> bool:
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


def proportional(pred: tuple[str, str], gold: tuple[str, str]) -> bool:
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


__all__ = ["Value", "numeric_equal", "proportional"]
