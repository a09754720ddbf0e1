"""The one chain/answer boundary (`jaxcot.text.answers`) and every stage that uses it."""

import pytest

from jaxcot.text.answers import gold_answer, last_boxed, split_answer, stated_number, value_span

# (completion, chain, answer): GSM8K-, MATH- and testbed-style completions.
SPLITS = [
    # testbed: the answer line after the chain
    ("Okay.\n\nFirst, 2 + 3 = 5.\n\nIn the end, Mia has 5 apples.\nThe answer is 5.",
     "Okay.\n\nFirst, 2 + 3 = 5.\n\nIn the end, Mia has 5 apples.\n", "The answer is 5."),
    ("2 + 3 = 5.\nThe answer is 5.", "2 + 3 = 5.\n", "The answer is 5."),
    # GSM8K: "The final answer is", "####", a stated answer inside a sentence
    ("She adds 3 and 4 to get 7. The final answer is 7.", "She adds 3 and 4 to get 7. ", "The final answer is 7."),
    ("48 / 2 = 24 clips in May.\n#### 7", "48 / 2 = 24 clips in May.\n", "#### 7"),
    ("We add them. So the answer is 18.", "We add them. ", "So the answer is 18."),
    ("First, The answer is not yet. Then 4. The answer is 4.", "First, The answer is not yet. Then 4. ",
     "The answer is 4."),
    ("It costs 3.5 dollars. Answer: 3.5", "It costs 3.5 dollars. ", "Answer: 3.5"),
    ("**The answer is 42**", "", "**The answer is 42**"),
    # MATH: \boxed and \fbox, the Minerva form
    ("x = 2\nso $\\boxed{2}$.", "x = 2\n", "so $\\boxed{2}$."),
    ("So $a+b=0$.\nThus $\\boxed{0}$.", "So $a+b=0$.\n", "Thus $\\boxed{0}$."),
    ("We get $\\fbox{3}$.", "", "We get $\\fbox{3}$."),
    ("Since $x^2 = 4$, $x = 2$.\n\nFinal Answer: The final answer is $\\frac72$. I hope it is correct.",
     "Since $x^2 = 4$, $x = 2$.\n\n", "Final Answer: The final answer is $\\frac72$. I hope it is correct."),
    ("The value is 0.5. Hence the final answer is $\\boxed{\\frac{1}{2}}$.", "The value is 0.5. ",
     "Hence the final answer is $\\boxed{\\frac{1}{2}}$."),
    # no marker: all chain
    ("no marker here", "no marker here", ""),
    ("", "", ""),
]


@pytest.mark.parametrize("text,chain,answer", SPLITS)
def test_split_answer(text, chain, answer):
    c, a = split_answer(text)
    assert (c, a) == (chain, answer) and c + a == text


def test_generation_counting_and_grading_agree_on_the_boundary():
    """The cut generation writes, the chain eval counts, and the number the grader reads come from
    the same rule (the issue's two drifting examples included)."""
    from jaxcot.eval.metrics import cot_tokens
    from jaxcot.generate.traces import trace_record
    from jaxcot.text.grading import grade_gsm8k

    class Done:
        finish_reason, token_ids = "eos", [1, 2, 3]

        def __init__(self, text):
            self.text = text

    from jaxcot.generate.traces import GenerateConfig

    words = lambda s: len(s.split())  # noqa: E731
    for text, gold in (("She adds 3 and 4 to get 7. The final answer is 7.", "7"), ("3 + 4 = 7\n#### 7", "7")):
        rec = trace_record({"id": "a", "question": "q", "gold": gold}, Done(text), GenerateConfig(), grade_gsm8k)
        assert rec["chain"] + rec["answer"] == text and rec["answer"] and rec["correct"]
        assert cot_tokens(text, words) == words(rec["chain"])


def test_reference_trace_from_benchmark_solution():
    from jaxcot.generate.traces import reference_trace

    t = reference_trace({"id": "g1", "question": "q?", "gold": "72", "solution": "48+24 = 72 clips."})
    assert t["chain"] == "48+24 = 72 clips.\n" and t["answer"] == "The answer is 72." and t["correct"]
    m = reference_trace({"id": "m1", "question": "q?", "gold": "0", "solution": "So $a+b=0$.\nThus $\\boxed{0}$."})
    assert m["chain"] + m["answer"] == "So $a+b=0$.\nThus $\\boxed{0}$." and m["answer"].startswith("Thus")


def test_last_boxed_forms():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{7}") == "7" and last_boxed("so \\boxed 5.") == "5"
    assert last_boxed("\\boxed{unclosed") is None and last_boxed(None) is None


def test_gold_and_value():
    assert gold_answer("Janet sells 9 eggs.\n#### 1,800") == "1800"
    assert gold_answer("so it is $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert gold_answer(" 42 ") == "42"
    assert stated_number("The answer is 12 apples. Then 13.") == "12"
    answer = "The answer is 16."
    s, e = value_span(answer, "16")
    assert answer[s:e] == "16" and value_span("The answer is 116.", "16") is not None
    s, e = value_span("The answer is 116.", "16")
    assert "The answer is 116."[s:e] == "116"  # not found as "16": falls back to the stated number


def test_one_copy_of_each_rule():
    """The answer rules live in jaxcot.text.answers alone: no other module defines them."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "jaxcot"
    pattern = re.compile(r"^def (last_boxed|split_\w*answer\w*|_?last_number|extract_gold|\w*grader_for)\(", re.M)
    found = {str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())}
    assert found == {"text/answers.py"}
