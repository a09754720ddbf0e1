"""The graders as they were before the grader issue: a frozen copy for `benchmarks/graders.py` only.

`jaxcot/text/answers.py` and `jaxcot/text/grading.py` at commit f6815b8, concatenated (answer
reading, then equality), unchanged apart from the imports. Do not edit: it is the baseline the
benchmark measures the current graders against. `grade_gsm8k` and `grade_math` are its entry points.
"""

from __future__ import annotations

import importlib
import math
import re
from fractions import Fraction
from typing import Callable

MARKER = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:)|####|\\(?:boxed|fbox)\b", re.IGNORECASE)
# The end of a sentence: a newline, or . ! ? followed by whitespace (so "3.5" ends nothing).
_SENTENCE_END = re.compile(r"\n|[.!?](?=\s)")


def split_answer(text: str) -> tuple[str, str]:
    """(chain, answer) of a completion with ``chain + answer == text`` (see the module docstring)."""
    last = max(MARKER.finditer(text), key=lambda m: m.start(), default=None)
    if last is None:
        return text, ""
    start = 0
    for end in _SENTENCE_END.finditer(text, 0, last.start()):
        start = end.end()
    while start < last.start() and text[start] in " \t":
        start += 1
    return text[:start], text[start:]


# ---------------------------------------------------------------- \boxed{}


def braced(text: str, i: int) -> str | None:
    """Content of the brace group opening at text[i] == '{' (escaped braces skipped), or None
    when it is not closed."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{" and (j == 0 or text[j - 1] != "\\"):
            depth += 1
        elif text[j] == "}" and (j == 0 or text[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


def last_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces), or of ``\\boxed 5``."""
    if text is None:
        return None
    for m in reversed(list(re.finditer(r"\\(?:boxed|fbox)\b", text))):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            content = braced(text, i)
            if content is not None:
                return content
        elif i > m.end():  # "\boxed 5"
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                return tok.group(0).rstrip(".")
    return None


# ---------------------------------------------------------------- numbers

_SIGN = r"(?:(?<![\w)\]])-)?"  # a minus right after a word or bracket is subtraction, not a sign
_NUM = rf"{_SIGN}\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|{_SIGN}\d+(?:\.\d+)?|{_SIGN}\.\d+"
NUMBER = re.compile(rf"(?:(?<![\d.])(?:\d+\s+\d+/\d+)|(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?)")
_UNIT_WORDS = r"(?:percent|per\s*cent|[a-zA-Z][a-zA-Z.\s]*)"  # any trailing words: "dollars", "cm"


def clean_number_text(s: str) -> str:
    """A number's text without LaTeX escapes, dollar signs, braces or a final full stop."""
    s = s.strip().replace("\u2212", "-").replace("\u2013", "-")
    s = re.sub(r"\\(?:\$|%|,|!|;|:|\s)", lambda m: m.group(0)[1] if m.group(0)[1] in "$%" else "", s)
    s = s.replace("$", "").replace("\\text", "").replace("{", "").replace("}", "")
    return s.strip().rstrip(".").strip()


def parse_number(text: str) -> Fraction | None:
    """Exact value of a number as written: "1,234.50", "$5", "-3", "3/4", "1 1/2", "50%" (-> 50),
    "7 dollars", ".5", "18." -> Fraction; None when `text` is not a single number."""
    s = clean_number_text(text)
    s = re.sub(rf"\s*(?:%|{_UNIT_WORDS})$", "", s, flags=re.IGNORECASE).strip()
    s = s.replace(" ", "") if re.fullmatch(r"-?\s*[\d.,/ ]+", s) and not re.fullmatch(r"-?\d+\s+\d+/\d+", s) else s
    m = re.fullmatch(r"(-?)(\d+)\s+(\d+)/(\d+)", s)
    if m:
        if int(m.group(4)) == 0:
            return None
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    m = re.fullmatch(rf"({_NUM})(?:/({_NUM}))?", s)
    if not m:
        return None
    num = Fraction(m.group(1).replace(",", ""))
    if m.group(2) is None:
        return num
    den = Fraction(m.group(2).replace(",", ""))
    return None if den == 0 else num / den


def last_number(text: str | None) -> str | None:
    """The text of the last number in `text` ("1,234.5", "3/4", "1 1/2"), or None."""
    found = NUMBER.findall((text or "").replace("\u2212", "-"))
    return found[-1] if found else None


# ---------------------------------------------------------------- what the answer states

_STATED = re.compile(r"answer\s*(?:is|:)\s*[:*\s]*", re.IGNORECASE)
_HASH = re.compile(r"####\s*")


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not a decimal point)."""
    return re.split(r"\.(?!\d)", text, maxsplit=1)[0]


def stated_number(text: str | None) -> str | None:
    """The number a completion (or a GSM8K reference solution) states as its final answer: after
    the last "answer is" / "answer:" (its first sentence, or a ``\\boxed{}`` there), else after the
    last "####", else in the last ``\\boxed{}``, else the last number of the text."""
    if text is None:
        return None
    for pattern in (_STATED, _HASH):
        matches = list(pattern.finditer(text))
        if matches:
            tail = text[matches[-1].end():].split("\n", 1)[0]
            boxed = last_boxed(tail)
            number = last_number(boxed) if boxed is not None else last_number(_first_sentence(tail))
            if number is not None:
                return number
    boxed = last_boxed(text)
    if boxed is not None and last_number(boxed) is not None:
        return last_number(boxed)
    return last_number(text)


def stated_text(text: str | None) -> str:
    """The words a completion states as its answer: the rest of the sentence after the last
    "answer is" / "answer:", else the last non-empty line; '' for none."""
    text = text or ""
    matches = list(_STATED.finditer(text))
    if matches:
        return _first_sentence(text[matches[-1].end():].split("\n", 1)[0]).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def stated_latex(text: str | None) -> str | None:
    """A MATH-style final answer: the last ``\\boxed{}``; failing that, the rest of the line after
    the last "answer is" / "answer:" (dollar signs and a final full stop removed)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    m = list(_STATED.finditer(text or ""))
    if m:
        ans = text[m[-1].end():].split("\n")[0].strip().rstrip(".").strip().strip("$").strip()
        return ans or None
    return None


def gold_answer(reference: str) -> str:
    """The final answer of a reference solution: after GSM8K's "####" (commas removed), else the
    last ``\\boxed{}``, else the whole text, stripped."""
    reference = str(reference)
    if "####" in reference:
        return reference.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = last_boxed(reference)
    return boxed.strip() if boxed is not None else reference.strip()


def _whole_occurrence(value: str, text: str) -> tuple[int, int] | None:
    """Span of the last occurrence of `value` in `text` not inside a longer word or number
    ("16" is not found inside "116" or "16.5")."""
    hits = list(re.finditer(r"(?<![\w.])" + re.escape(value) + r"(?!\w|\.\d)", text))
    return (hits[-1].start(), hits[-1].end()) if hits else None


def value_span(answer: str, gold: str | None = None) -> tuple[int, int] | None:
    """Character span [start, end) of the final answer's value inside `answer`: the last whole
    occurrence of `gold` (when given), else of the last ``\\boxed{}`` content, else of
    `stated_number`; None when there is none."""
    for value in (gold, last_boxed(answer), stated_number(answer)):
        value = (value or "").strip()
        span = _whole_occurrence(value, answer) if value else None
        if span is not None:
            return span
    return None


# ---------------------------------------------------------------- grading.py


# ---------------------------------------------------------------- GSM8K


def _percent_in(text: str, number: str) -> bool:
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
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{x}`, `\\frac{a}2`, `\\sqrt2` -> `\\sqrt{2}`."""
    arg = r"(\{(?:[^{}]|\{[^{}]*\})*\}|\\[a-zA-Z]+|[0-9a-zA-Z])"
    prev = None
    while prev != s:
        prev = s
        s = re.sub(r"\\frac\s*" + arg + r"\s*" + arg,
                   lambda m: "\\frac" + "".join(a if a.startswith("{") else "{" + a + "}" for a in m.groups()), s)
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


def normalize_latex(ans: str) -> str:
    """Canonical string form of a MATH answer (see module docstring); '' for None."""
    if ans is None:
        return ""
    s = str(ans).strip()
    s = s.replace("\n", " ").replace("\\!", "").replace("\\displaystyle", "")
    s = re.sub(r"(?<!\\)\\[,;:> ]", " ", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])\s*", "", s)
    s = s.replace("\\{", "\x02").replace("\\}", "\x03")  # set braces survive brace stripping
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _drop_text_units(s)
    s = _UNIT_TAIL.sub("", s).strip()
    s = re.sub(r"^\s*\\text\s*", "", s)
    s = s.rstrip(" .")
    # "x = 5" / "y=2x+1" -> right-hand side; not for "x=1, y=2" style systems
    m = re.fullmatch(r"\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*([^=]+)", s)
    if m and "," not in s.split("=", 1)[0]:
        s = m.group(1)
    s = _fix_shorthand(s)
    s = re.sub(r"\s+", "", s)
    s = s.replace("\\le", "\\leq").replace("\\leqq", "\\leq").replace("\\ge", "\\geq").replace("\\geqq", "\\geq")
    s = s.replace("\\infinity", "\\infty").replace("+\\infty", "\\infty")
    s = re.sub(r"bmatrix|vmatrix|Bmatrix|matrix\*|smallmatrix", "pmatrix", s)
    s = re.sub(r"^\((\w)\)$", r"\1", s)  # "(C)" -> "C"
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # ".5" -> "0.5"
    s = re.sub(r"(\d)\.0+(?!\d)", r"\1", s)  # "3.0" -> "3"
    s = re.sub(r"(\d\.\d*?)0+(?!\d)", r"\1", s)  # "2.50" -> "2.5"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = re.sub(r"^\{(.*)\}$",
               lambda m: m.group(1) if braced("{" + m.group(1) + "}", 0) == m.group(1) else m.group(0), s)
    return s.replace("\x02", "\\{").replace("\x03", "\\}")


# ---------------------------------------------------------------- MATH: numeric evaluation

_COMMANDS = ("\\frac", "\\sqrt", "\\pi", "\\cdot", "\\times", "\\div", "\\infty", "\\sin", "\\cos", "\\tan",
             "\\ln", "\\log", "\\exp")


class _Unparsable(Exception):
    pass


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
        elif c in "+-*/^(){}[]":
            out.append(c)
            i += 1
        elif c.isalpha():
            out.append(c)
            i += 1
        else:
            raise _Unparsable(s)
    return out


class _Eval:
    """Recursive-descent evaluator: sum := term (('+'|'-') term)*; term := power (op? power)*;
    power := unary ('^' unary)?; atoms: numbers, variables, (...), {...}, \\frac{}{}, \\sqrt[n]{}."""

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

    def run(self):
        v = self.sum()
        if self.peek() is not None:
            raise _Unparsable(self.peek())
        return v

    def sum(self):
        v = self.term()
        while self.peek() in ("+", "-"):
            v = v + self.term() if self.take() == "+" else v - self.term()
        return v

    def term(self):
        v = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times", "/", "\\div"):
                self.take()
                rhs = self.unary()
                v = v * rhs if tok in ("*", "\\cdot", "\\times") else v / rhs
            elif tok is not None and tok not in ("+", "-", ")", "}", "]", "^"):
                v = v * self.power()  # implicit product: 2\sqrt{3}, 3x
            else:
                return v

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exp = self.unary()
            return base ** exp
        return base

    def group(self):
        self.take("{")
        v = self.sum()
        self.take("}")
        return v

    def atom(self):
        tok = self.take()
        if re.fullmatch(r"\d*\.?\d+|\d+\.", tok):
            return complex(float(tok))
        if tok in ("(", "{", "["):
            v = self.sum()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if tok == "\\frac":
            return self.group() / self.group()
        if tok == "\\sqrt":
            root = 2.0
            if self.peek() == "[":
                self.take()
                root = self.sum().real
                self.take("]")
            return self.group() ** (1.0 / root)
        if tok == "\\pi":
            return complex(math.pi)
        if tok in ("\\sin", "\\cos", "\\tan", "\\ln", "\\log", "\\exp"):
            import cmath

            fn = {"\\sin": cmath.sin, "\\cos": cmath.cos, "\\tan": cmath.tan, "\\ln": cmath.log,
                  "\\log": cmath.log10, "\\exp": cmath.exp}[tok]
            return fn(self.power())
        if len(tok) == 1 and tok.isalpha():
            if tok not in self.env:
                raise _Unparsable(tok)
            return self.env[tok]
        raise _Unparsable(tok)


_POINTS = (0.7312, 1.9137, -1.3071)


def _variables(s: str) -> set[str]:
    return {t for t in _tokens(s) if len(t) == 1 and t.isalpha()}


def _evaluate(s: str, env: dict) -> complex:
    return _Eval(_tokens(s), env).run()


def _numeric_equal(a: str, b: str, rel_tol: float = 1e-6) -> bool | None:
    """True/False when both sides evaluate (same variables, at fixed points); None if unparsable."""
    try:
        names = sorted(_variables(a) | _variables(b))
        if names and (_variables(a) != _variables(b) or len(names) > 3):
            return False if _variables(a) and _variables(b) else None
        for k in range(len(_POINTS) if names else 1):
            env = {n: complex(_POINTS[(k + j) % len(_POINTS)] + 0.37 * j) for j, n in enumerate(names)}
            va, vb = _evaluate(a, env), _evaluate(b, env)
            if not _isclose(va, vb, rel_tol):
                return False
        return True
    except (_Unparsable, ZeroDivisionError, OverflowError, ValueError, RecursionError):
        return None


def _isclose(a: complex, b: complex, rel_tol: float) -> bool:
    return abs(a - b) <= max(rel_tol * max(abs(a), abs(b)), 1e-9)


# ---------------------------------------------------------------- MATH: structure


def _split_top(s: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{\x02":
            depth += 1
        elif c in ")]}\x03":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
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


def _equal_normalized(a: str, b: str, depth: int = 0) -> bool:
    if a == b:
        return True
    if not a or not b or depth > 4:
        return False
    ma, mb = _matrix(a), _matrix(b)
    if ma is not None or mb is not None:
        return (ma is not None and mb is not None and len(ma) == len(mb)
                and all(len(ra) == len(rb) and all(_equal_normalized(x, y, depth + 1) for x, y in zip(ra, rb))
                        for ra, rb in zip(ma, mb)))
    ba, bb = _brackets(a), _brackets(b)
    if ba and bb and ("," in ba[1] or "," in bb[1]):
        if ba[0] == "\x02" or bb[0] == "\x02":  # sets: order does not matter
            return ba[0] == bb[0] and _same_multiset(_split_top(ba[1]), _split_top(bb[1]), depth)
        pa, pb = _split_top(ba[1]), _split_top(bb[1])
        return (ba[0] == bb[0] and ba[2] == bb[2] and len(pa) == len(pb)
                and all(_equal_normalized(x, y, depth + 1) for x, y in zip(pa, pb)))
    pa, pb = _split_top(a), _split_top(b)
    if len(pa) > 1 or len(pb) > 1:  # "1,2" lists of solutions: order does not matter
        return _same_multiset(pa, pb, depth)
    if re.search(r"\\infty|\\cup|\\cap|[<>]|\\leq|\\geq", a + b):
        return False
    num = _numeric_equal(a, b)
    return bool(num)


def _same_multiset(pa: list[str], pb: list[str], depth: int) -> bool:
    if len(pa) != len(pb):
        return False
    rest = list(pb)
    for x in pa:
        hit = next((k for k, y in enumerate(rest) if _equal_normalized(x, y, depth + 1)), None)
        if hit is None:
            return False
        rest.pop(hit)
    return True


def math_equal(pred: str | None, gold: str | None) -> bool:
    """True when two MATH answer strings (box contents) denote the same answer."""
    if pred is None or gold is None:
        return False
    return _equal_normalized(normalize_latex(pred), normalize_latex(gold))


def grade_math(completion: str, gold: str) -> bool:
    """Grade a completion (its last `\\boxed{}`) against a gold answer; a gold that is a full
    solution is reduced to its last boxed answer first."""
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


