"""GSM8K grading: is a completion's stated number the gold one?

Numbers compare exactly as fractions after removing commas, currency, units and trailing zeros
("3/4" == "0.75"), with no tolerance, because GSM8K golds are exact. A percentage in the
completion also matches its value over 100 ("50%" == "50" or "0.5"). A gold that is not a number
("blue") is matched by words. The answer is read by `jaxcot.text.answers`; the rules, and the
table they are measured on, are in docs/graders.md.
"""

from __future__ import annotations

import re

from jaxcot.text.answers import clean_number_text, parse_number, stated_number, stated_text


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


__all__ = ["grade_gsm8k", "gsm8k_equal"]
