"""Where a chain of thought ends and its answer begins, and what the answer says.

One rule serves every stage (generation's cut, the SFT builders, GoGI's answer span, CoT-token
counting and the graders), so a student is trained and measured on the same boundary:

- A *final-answer marker* is "The answer is", "The final answer is", "Final answer:",
  "Answer:" (any case), GSM8K's "####", or a ``\\boxed`` / ``\\fbox`` command.
- The answer is the sentence that holds the **last** marker, to the end of the text; the chain
  is everything before it, so ``chain + answer == text``. A sentence starts after a newline or
  after ``.``, ``!`` or ``?`` followed by whitespace (a decimal point such as ``3.5`` ends none).
- Without a marker the whole text is chain and the answer is empty (a run-on chain counts fully).

So "... to get 7. The final answer is 7." splits before "The final answer", "#### 7" starts the
answer, and "x = 2\\nso $\\boxed{2}$." gives the answer "so $\\boxed{2}$.".

The rest reads the answer: `last_boxed` (``\\boxed{...}``, ``\\fbox{...}``, ``\\boxed 5``),
numbers as written (`parse_number`, `last_number`, `plain_numbers`, `word_number`), the stated
number of a completion (`stated_number`: the value the answer sentence states, so "The answer is
12, not 13." states 12 and later numbers do not count), a MATH-style answer (`stated_latex`, the
Minerva form "The final answer is $\\frac72$. I hope it is correct." included), a reference
solution's final answer (`gold_answer`), and where the answer's value sits in its text
(`value_span`). Nothing here imports jax.
"""

from __future__ import annotations

import re
from fractions import Fraction

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
# Where a stated answer's own value ends: a parenthesis, or a negation or a reason ("12, not 13",
# "12 because ..."); what follows is an aside, not the answer.
_ASIDE = re.compile(r"\(|,?\s*\b(?:not|rather than|instead of|because|since|but|although|whereas)\b", re.IGNORECASE)
_LATEX_ASIDE = re.compile(r",?\s*\b(?:not|rather than|instead of|because|since)\b", re.IGNORECASE)
# Where a stated answer concludes a computation: its value is the number after the last of these.
_CONCLUSION = re.compile(r"=|\b(?:so|thus|hence|i\.e\.|for a total of)\b", re.IGNORECASE)
_OPERATOR = r"\s*[-+*/\u00d7\u00f7x]\s*"
_OPERATOR_NEXT = re.compile(_OPERATOR + r"\d")
_EXPRESSION = re.compile(rf"(?:{NUMBER.pattern})(?:{_OPERATOR}(?:{NUMBER.pattern}))+")  # "10-3", "3 x 4"
_DOLLARS_AND_CENTS = re.compile(r"(\d+)\s*dollars?\s+and\s+(\d{1,2})\s*cents?", re.IGNORECASE)
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_NUMBER = re.compile(rf"\b(?:({'|'.join(_TENS)})(?:[-\s]({'|'.join(_UNITS[1:10])}))?|({'|'.join(_UNITS)}))\b",
                          re.IGNORECASE)
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_SCALE_WORD = re.compile(rf"\s*({'|'.join(_SCALES)})\b", re.IGNORECASE)
_INLINE_MATH = re.compile(r"\s*(?:\$+([^$]+)\$|\\\((.+?)\\\))")


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not a decimal point)."""
    return re.split(r"\.(?!\d)", text, maxsplit=1)[0]


def plain_numbers(text: str) -> str:
    r"""`text` with LaTeX number markup made plain: ``\frac{3}{4}`` -> ``3/4`` (integers), ``1{,}000`` ->
    ``1,000``, ``\$`` -> ``$``, ``\%`` -> ``%``, a Unicode minus -> ``-``."""
    text = re.sub(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}|\\[dt]?frac(\d)(\d)",
                  lambda m: f"{m.group(1) or m.group(3)}/{m.group(2) or m.group(4)}", text)
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%")
    return text.replace("\u2212", "-").replace("\u2013", "-")


def _scaled(number: str, text: str, end: int) -> str:
    """`number` times a scale word right after it at text[end:] ("7.5 million" -> "7500000")."""
    m = _SCALE_WORD.match(text, end)
    value = parse_number(number) if m else None
    if value is None:
        return number
    value *= _SCALES[m.group(1).lower()]
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def word_number(text: str) -> str | None:
    """The first number written in words as digits: zero to ninety-nine ("seven", "twenty-five"),
    times a scale word after it ("three hundred")."""
    m = _WORD_NUMBER.search(text)
    if m is None:
        return None
    if m.group(3):
        value = _UNITS.index(m.group(3).lower())
    else:
        value = 20 + 10 * _TENS.index(m.group(1).lower()) + (_UNITS.index(m.group(2).lower()) if m.group(2) else 0)
    return _scaled(str(value), text, m.end())


def _stated_value(clause: str) -> str | None:
    """The number a clause after "answer is" states: an aside ("12, not 13", "12 (2 + 10)", "12
    because ...") is dropped; after a conclusion ("5 + 7 = 12", "..., so 17") the number after the
    last one counts; then the first number ("8 dollars and 50 cents" is 8.50, "7.5 million" is
    7500000; an unevaluated expression such as "10-3" is returned whole, so it equals no single
    number), else a number word ("seven")."""
    aside = _ASIDE.search(clause)
    if aside is not None and NUMBER.search(clause[:aside.start()]):
        clause = clause[:aside.start()]
    last = max(_CONCLUSION.finditer(clause), key=lambda m: m.start(), default=None)
    if last is not None and NUMBER.search(clause[last.end():]):
        clause = clause[last.end():]
    money = _DOLLARS_AND_CENTS.search(clause)
    if money is not None:
        return f"{money.group(1)}.{int(money.group(2)):02d}"
    first = NUMBER.search(clause)
    if first is None:
        return word_number(clause)
    expression = _EXPRESSION.match(clause, first.start())
    if _OPERATOR_NEXT.match(clause, first.end()) and expression:
        return expression.group(0)
    return _scaled(first.group(0), clause, first.end())


def stated_number(text: str | None) -> str | None:
    """The number a completion (or a GSM8K reference solution) states as its final answer: after
    the last "answer is" / "answer:" (a ``\\boxed{}`` there, else the value its first sentence
    states, `_stated_value`), else after the last "####", else in the last ``\\boxed{}``, else the
    last number of the text. LaTeX numbers are read plain first (`plain_numbers`)."""
    if text is None:
        return None
    text = plain_numbers(text)
    for pattern in (_STATED, _HASH):
        matches = list(pattern.finditer(text))
        if matches:
            tail = text[matches[-1].end():].split("\n", 1)[0]
            boxed = last_boxed(tail)
            number = last_number(boxed) if boxed is not None else _stated_value(_first_sentence(tail))
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
    """A MATH-style final answer: the last ``\\boxed{}``; failing that, after the last "answer is" /
    "answer:" the first inline math there (``$...$`` or ``\\(...\\)``: the Minerva form "The final
    answer is $\\frac72$. I hope it is correct."), else the rest of its sentence before an aside
    ("12, not 13" states 12)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    m = list(_STATED.finditer(text or ""))
    if not m:
        return None
    tail = text[m[-1].end():].split("\n")[0]
    math = _INLINE_MATH.match(tail)
    if math is not None:
        return (math.group(1) or math.group(2)).strip() or None
    ans = _LATEX_ASIDE.split(_first_sentence(tail), maxsplit=1)[0].strip().strip("$").strip()
    return ans or None


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


__all__ = [
    "MARKER", "NUMBER", "braced", "clean_number_text", "gold_answer", "last_boxed", "last_number", "parse_number",
    "plain_numbers", "split_answer", "stated_latex", "stated_number", "stated_text", "value_span", "word_number",
]
