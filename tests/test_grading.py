"""Graders: GSM8K numbers and MATH LaTeX, with tricky pairs that must and must not match."""

import threading

import pytest
from grader_pairs import HELDOUT, PAIRS, is_exact_gold

from jaxcot.text.answers import last_boxed, parse_number, stated_latex, stated_number
from jaxcot.text.grading import get_grader, grade_gsm8k, grade_math, gsm8k_equal, math_equal, normalize_latex

# (completion, gold): the completion's final answer equals the gold.
GSM8K_EQUAL = [
    ("The answer is 18.", "18"),
    ("#### 72", "72"),
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("The answer is $18.", "18"),
    ("The answer is 18 dollars.", "18"),
    ("The answer is 1,000.", "1000"),
    ("The answer is 1000", "1,000"),
    ("The answer is 18.0", "18"),
    ("The answer is 18.00.", "18"),
    ("The answer is 12.50", "12.5"),
    ("The answer is -5.", "-5"),
    ("The answer is \u22125.", "-5"),
    ("The answer is 50%.", "50"),
    ("The answer is 50%.", "0.5"),
    ("The answer is 3/4.", "0.75"),
    ("The answer is 0.75", "3/4"),
    ("The answer is .5", "0.5"),
    ("The answer is 1 1/2 cups.", "1.5"),
    ("So 5 + 13 = 18 apples in total.", "18"),
    ("The answer is: 42", "42"),
    ("**The answer is 42**", "42"),
    ("Therefore, the final answer is $\\boxed{42}$.", "42"),
    ("The answer is \\boxed{1,234}.", "1234"),
    ("I think the answer is 7. Wait, let me redo it. The answer is 8.", "8"),
    ("The answer is 8. That took 3 steps.", "8"),
    ("The answer is $1,234.50.", "1234.5"),
    ("The answer is 2,500,000", "2500000"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"),
    ("The answer is 18 cm.", "18"),
    ("The answer is 0.", "0"),
    ("The answer is 007.", "7"),
    ("the answer is 15", "15.000"),
    ("Answer: 15", "15"),
    ("He pays 10-3=7 dollars", "7"),
    ("The total is \\$25.", "25"),
    ("The answer is 25 percent.", "0.25"),
    ("The answer is 6/3.", "2"),
    ("It costs $0.50, so the answer is 0.5", "0.50"),
    ("The answer is 3.14.", "3.140"),
    ("The answer is 100\n\nSome trailing words with 7 in them.", "100"),
    ("Natalia sold 48+24 = 72 clips", "72"),
    ("The answer is 12 apples and 5 oranges, so 17 fruits.", "17"),
    ("The answer is 10-3=7.", "7"),
    ("The answer is seven.", "7"),
]

# (completion, gold): must NOT be graded correct.
GSM8K_NOT_EQUAL = [
    ("The answer is 18.", "180"),
    ("The answer is 18.", "-18"),
    ("The answer is -18.", "18"),
    ("The answer is 1,000.", "100"),
    ("The answer is 0.75", "3/5"),
    ("The answer is 3.14159", "3.14"),
    ("The answer is 12.5", "12"),
    ("The answer is 5.", "50"),
    ("The answer is 50.", "0.5"),
    ("The answer is 7. Wait, let me redo it. The answer is 8.", "7"),
    ("I don't know.", "5"),
    ("", "5"),
    ("The answer is seven.", "8"),
    ("#### 72", "27"),
    ("The answer is 1 1/2 cups.", "1"),
    ("So 5 + 13 = 18 apples in total.", "13"),
    ("The answer is 2,500,000", "2500"),
    ("The answer is 10-3", "10"),
    ("The answer is 0.", "0.001"),
    ("The answer is 100.1", "100"),
    ("The answer is 1e3", "1000"),
    ("There are 4 boxes.", "5"),
    ("The answer is 25%.", "25000"),
    ("The answer is 1/3.", "0.333"),
    ("The answer is 3/0.", "3"),
    ("The answer is 99.99", "100"),
    ("The answer is $18.01", "18"),
    ("He pays 10-3=7 dollars", "-3"),
    ("Answer: 15", "1.5"),
    ("The answer is 2/4.", "0.25"),
    ("The answer is 64.", "8"),
    ("The answer is 33.", "3"),
    ("#### 1,320", "1,32"),
    ("The answer is 0.25", "25"),
    ("The answer is -0.5", "0.5"),
    ("The answer is 19", "18.99"),
    ("The answer is 18.", "18.5"),
    ("The answer is 42.", "24"),
    ("Total: 8 dollars and 50 cents", "8"),
    ("Therefore, the final answer is $\\boxed{41}$.", "42"),
    ("The answer is 12 apples and 5 oranges, so 17 fruits.", "12"),
]


@pytest.mark.parametrize("completion,gold", GSM8K_EQUAL)
def test_gsm8k_equal_pairs(completion, gold):
    assert grade_gsm8k(completion, gold), (completion, gold, stated_number(completion))


@pytest.mark.parametrize("completion,gold", GSM8K_NOT_EQUAL)
def test_gsm8k_not_equal_pairs(completion, gold):
    assert not grade_gsm8k(completion, gold), (completion, gold, stated_number(completion))


def test_gsm8k_pair_counts():
    assert len(GSM8K_EQUAL) >= 40 and len(GSM8K_NOT_EQUAL) >= 40


def test_parse_number_values():
    assert parse_number("$1,234.50") == parse_number("1234.5")
    assert parse_number("3/4") * 4 == 3
    assert parse_number("-1 1/2") == parse_number("-1.5")
    assert parse_number("seven") is None and parse_number("1/0") is None
    assert gsm8k_equal("50%", "0.5") and gsm8k_equal("50%", "50") and not gsm8k_equal("0.5", "50")


# (prediction box content or completion, gold): equal after normalisation.
MATH_EQUAL = [
    ("\\frac{1}{2}", "\\frac12"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    (".5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\frac{3}{4}", "0.75"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("\\frac{\\sqrt3}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("1+\\sqrt{2}", "\\sqrt{2}+1"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("30^\\circ", "30"),
    ("30^{\\circ}", "30"),
    ("5\\text{ cm}", "5"),
    ("5 \\text{ cm}^2", "5"),
    ("\\text{east}", "east"),
    ("\\text{(C)}", "C"),
    ("10\\%", "10"),
    ("\\$5.00", "5"),
    ("1,\\!000", "1000"),
    ("1,000", "1000"),
    ("x = 3", "3"),
    ("y=2x+3", "2x+3"),
    ("3.0", "3"),
    ("2.50", "2.5"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("(-\\infty,\\infty)", "(-\\infty,+\\infty)"),
    ("[1, 2)", "\\left[1,2\\right)"),
    ("\\{1, 2\\}", "\\{2,1\\}"),
    ("1, 2", "2, 1"),
    ("2x+1", "1+2x"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\frac{x}{2}", "x/2"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}"),
    ("\\begin{pmatrix} 1 & 0.5 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix}1&\\frac12\\\\0&1\\end{pmatrix}"),
    ("-\\frac{2}{3}", "\\frac{-2}{3}"),
    ("\\sqrt[3]{8}", "2"),
    ("6\\pi", "6 \\pi"),
    ("\\frac{9}{4}.", "2.25"),
    ("\\displaystyle\\frac{1}{4}", "0.25"),
    ("4\\sqrt{2} \\text{ units}", "\\sqrt{32}"),
    ("2^{10}", "1024"),
]

MATH_NOT_EQUAL = [
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("0.5", "0.05"),
    ("\\sqrt{2}", "2"),
    ("2\\sqrt{3}", "3\\sqrt{2}"),
    ("(1,2)", "(2,1)"),
    ("[1,2)", "[1,2]"),
    ("(1,2)", "[1,2]"),
    ("(-\\infty, 3]", "(-\\infty, 3)"),
    ("-\\infty", "\\infty"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("1, 2", "1, 3"),
    ("x^2", "x^3"),
    ("2x+1", "2y+1"),
    ("2x+1", "2x-1"),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}"),
    ("30^\\circ", "60"),
    ("5\\text{ cm}", "6"),
    ("\\text{east}", "west"),
    ("C", "D"),
    ("10\\%", "100"),
    ("3", "3.01"),
    ("-3", "3"),
    ("\\frac{3}{4}", "\\frac{4}{3}"),
    ("1000", "100"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
    ("\\begin{pmatrix} 1 & 0 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 0 \\end{pmatrix}"),
    ("\\sqrt[3]{8}", "\\sqrt{8}"),
    ("6\\pi", "6"),
    ("2^{10}", "2^{11}"),
    ("", "0"),
    ("\\frac{1}{0}", "1"),
    ("(3, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{4})"),
    ("1, 2", "1, 2, 3"),
    ("x+1", "x+1,1"),
    ("a", "b"),
    ("12", "1,2"),
    ("\\frac{9}{4}", "2.2"),
    ("4\\sqrt{2}", "\\sqrt{30}"),
    ("(x+1)^2", "x^2+1"),
    ("y=2x+3", "2x+4"),
    ("\\infty", "0"),
]


@pytest.mark.parametrize("pred,gold", MATH_EQUAL)
def test_math_equal_pairs(pred, gold):
    assert math_equal(pred, gold), (pred, gold, normalize_latex(pred), normalize_latex(gold))
    assert math_equal(gold, pred), "symmetric"


@pytest.mark.parametrize("pred,gold", MATH_NOT_EQUAL)
def test_math_not_equal_pairs(pred, gold):
    assert not math_equal(pred, gold), (pred, gold, normalize_latex(pred), normalize_latex(gold))
    assert not math_equal(gold, pred), "symmetric"


def test_math_pair_counts():
    assert len(MATH_EQUAL) >= 40 and len(MATH_NOT_EQUAL) >= 40


def test_last_boxed_nested_and_variants():
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{1}{\\sqrt{2}}}.") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("so \\fbox{7}") == "7"
    assert last_boxed("\\boxed 5.") == "5"
    assert last_boxed("\\boxed{(1, \\{2\\})}") == "(1, \\{2\\})"
    assert last_boxed("no box here") is None
    assert last_boxed("\\boxed{unbalanced") is None
    assert stated_latex("Thus the answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"


def test_grade_math_completions():
    gold_solution = "So $a+b=-3+3=\\boxed{0}$."
    assert grade_math("Hence $\\boxed{0}$.", gold_solution)
    assert not grade_math("Hence $\\boxed{1}$.", gold_solution)
    assert grade_math("We get \\boxed{2} first, but correcting, \\boxed{\\dfrac{3}{4}}", "0.75")
    assert not grade_math("no final answer", "0")
    assert get_grader("MATH-500") is grade_math and get_grader("gsm8k") is grade_gsm8k
    assert get_grader(None) is grade_gsm8k and get_grader("jaxcot.text.grading:grade_math") is grade_math
    with pytest.raises(ValueError, match="module:function"):
        get_grader("nope")


def test_gsm8k_reference_solution_gold():
    sol = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert stated_number(sol) == "18"
    assert grade_gsm8k("The answer is 18.", sol) and not grade_gsm8k("The answer is 9.", sol)


# ---------------------------------------------------------------- the grader table (tests/grader_pairs.py)


def table_score(name):
    grade = get_grader(name)
    wrong = [p for p in PAIRS[name] if grade(p.completion, p.gold) != p.match]
    return wrong, [p for p in wrong if not p.match and is_exact_gold(p.gold)]


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_grader_table(name):
    """The shipped grader is right on >= 97% of its pairs and never accepts a wrong exact value."""
    pairs = PAIRS[name]
    wrong, false_pos_exact = table_score(name)
    assert len(pairs) - len(wrong) >= 0.97 * len(pairs), [(p.completion, p.gold, p.match) for p in wrong]
    assert false_pos_exact == [], false_pos_exact


@pytest.mark.parametrize("name", ["gsm8k", "math"])
def test_grader_table_is_large_and_two_sided(name):
    pairs = PAIRS[name]
    assert len(pairs) >= 120 and len(HELDOUT[name]) >= 50
    assert sum(p.match for p in pairs) >= 50 and sum(not p.match for p in pairs) >= 50
    assert sum(is_exact_gold(p.gold) and not p.match for p in pairs) >= 40
    assert len({(p.completion, p.gold) for p in pairs}) == len(pairs), "no duplicate rows"


def test_exact_gold_definition():
    assert all(is_exact_gold(g) for g in ("18", "-3", "1,000", "2{,}000\\text{ m}^2", "\\frac{-3}{4}", "3\\frac12",
                                          "0.5\\%", "10^6", "#### 1,072", "So $\\boxed{0}$.", "30^\\circ"))
    assert not any(is_exact_gold(g) for g in ("\\sqrt{2}", "\\pi", "(1,2)", "x^2+1", "\\text{east}", "5!"))


# ---------------------------------------------------------------- the cases, one by one


def test_math_exact_values_have_no_tolerance():
    assert not grade_math("\\boxed{1000001}", "1000000") and not grade_math("\\boxed{123456789}", "123456788")
    assert not math_equal("1000001\\sqrt{2}", "1000000\\sqrt{2}") and not math_equal("0.3333333", "\\frac13")
    assert math_equal("2^{30}", "1073741824") and math_equal("\\sqrt{8}", "2\\sqrt{2}")


def test_approximate_decimal_gold():
    assert math_equal("\\frac{1}{3}", "0.333") and math_equal("\\sqrt{2}", "1.41")
    assert not math_equal("0.333", "\\frac13") and not math_equal("0.54", "0.5") and not math_equal("\\frac23", "0.66")


def test_percent():
    assert not math_equal("\\frac12", "0.5\\%")
    assert math_equal("0.5", "0.5\\%") and math_equal("0.005", "0.5\\%") and math_equal("50\\%", "\\frac12")
    assert not math_equal("10\\%", "100") and not math_equal("1", "10\\%")


def test_stated_answer_is_preferred_over_later_numbers():
    assert grade_gsm8k("The answer is 12, not 13.", "12") and not grade_gsm8k("The answer is 12, not 13.", "13")
    assert grade_math("The answer is $12$, not $13$.", "12") and not grade_math("The answer is $12$, not $13$.", "13")
    assert stated_number("The answer is 12 because there are 3 bags of 4.") == "12"


def test_reordered_union():
    assert grade_math("\\boxed{(3,\\infty)\\cup(-\\infty,-2)}", "(-\\infty,-2)\\cup(3,\\infty)")
    assert not math_equal("(-\\infty,-2]\\cup(3,\\infty)", "(-\\infty,-2)\\cup(3,\\infty)")


@pytest.mark.parametrize("pred,gold,wrong", [
    ("x \\in [2,5]", "[2,5]", "[2,5)"),
    ("f(x)=x^2+1", "x^2+1", "x^2+2"),
    ("\\pm 3", "3, -3", "3"),
    ("\\log_2 8", "3", "8"),
    ("\\binom{5}{2}", "10", "\\frac52"),
    ("5!", "120", "5"),
    ("2{,}000\\text{ m}^2", "2000", "2"),
    ("1{,}000", "1000", "1"),
    ("3\\frac{1}{2}", "\\frac72", "\\frac32"),
])
def test_math_forms(pred, gold, wrong):
    assert math_equal(pred, gold) and math_equal(gold, pred)
    assert not math_equal(pred, wrong)


def test_minerva_form():
    minerva = "Final Answer: The final answer is $\\frac72$. I hope it is correct."
    assert stated_latex(minerva) == "\\frac72"
    assert grade_math(minerva, "\\frac{7}{2}") and grade_math(minerva, "3.5") and not grade_math(minerva, "\\frac73")
    assert grade_gsm8k("The final answer is $18$. I hope it is correct.", "18")


def test_graders_work_outside_the_main_thread():
    """No signal-based timeout: grading from a worker thread gives the same verdicts."""
    verdicts = []
    worker = threading.Thread(target=lambda: verdicts.extend(
        [grade_math("\\boxed{\\frac12}", "0.5"), grade_gsm8k("The answer is 5.", "5"), grade_math("\\boxed{1}", "2")]))
    worker.start()
    worker.join()
    assert verdicts == [True, True, False]
