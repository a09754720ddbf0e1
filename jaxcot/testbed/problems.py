"""The arithmetic testbed: multi-step word problems with verbose chains and ground-truth roles.

Each record is a Trace record (`id`, `question`, `chain`, `answer`, `gold`) plus:
- `roles`: `[[start, end, role], ...]` character spans that tile `chain` exactly, so any
  tokenizer's tokens map to roles through their offsets (`token_roles`).
- `start`, `steps` (`[{"op", "left", "right", "result"}, ...]`) and `scenario`: the problem itself.

Roles. Essential (needed to reach the answer): `operand`, `operator`, `equals`, `step_result`,
the tokens of the working equations. Everything else is removable: `restatement` (the question's
facts and running totals said again), `recheck` (re-stating an equation and calling it right; it
never catches an error, so it is true filler; `verify_rounds` adds whole paragraphs of it after the
final line, the overthinking a reasoning model shows once it has its answer), `hedge`, `filler`
(openers, interjections), `connective`, `quantity_word` (the unit after a result), `punct`, and
`space` (paragraph breaks; any whitespace-only token). Numbers inside restatements and re-checks
are copies, not operands.

Generation is deterministic: record `i` of seed `s` depends only on (s, i, config).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Iterator

from jaxcot.config import check, check_range

ESSENTIAL_ROLES = ("step_result", "operand", "operator", "equals")  # priority order inside a token
FILLER_ROLES = ("restatement", "recheck", "hedge", "filler", "connective", "quantity_word", "punct", "space")
ROLES = ESSENTIAL_ROLES + FILLER_ROLES
OPS = ("add", "sub", "mul")
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
PROB_FIELDS = ("goal_prob", "state_prob", "unit_prob", "recheck_prob", "hedge_prob", "review_prob")


@dataclasses.dataclass(frozen=True)
class TestbedConfig:
    """Difficulty and verbosity knobs. Defaults: the task a 1-5M decoder can learn on a CPU.

    Values stay in [min_value, max_value] after every step; add/sub operands come from
    operand_range, multipliers from mul_range; an op that cannot stay in range is not drawn.
    The *_prob knobs set how often each optional filler sentence appears.
    """

    __test__ = False  # not a pytest class

    min_steps: int = 2
    max_steps: int = 3
    start_range: tuple[int, int] = (2, 20)
    operand_range: tuple[int, int] = (2, 9)
    mul_range: tuple[int, int] = (2, 3)
    ops: tuple[str, ...] = ("add", "sub", "mul")
    op_weights: tuple[float, ...] = (0.4, 0.4, 0.2)
    min_value: int = 0
    max_value: int = 99
    goal_prob: float = 0.2
    state_prob: float = 0.35
    unit_prob: float = 0.4
    recheck_prob: float = 0.3
    hedge_prob: float = 0.2
    review_prob: float = 0.1
    verify_rounds: int = 0  # paragraphs re-deriving every step after the final line (overthinking)
    scenarios: tuple[str, ...] = ()  # empty: all of SCENARIOS

    def __post_init__(self):
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"TestbedConfig.ops: {self.ops} (each one of {OPS})")
        if len(self.op_weights) != len(self.ops):
            raise ValueError(f"TestbedConfig.op_weights: {len(self.op_weights)} weights for {len(self.ops)} ops")
        check_range(self, "verify_rounds", 0)
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"TestbedConfig: need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        for name in ("start_range", "operand_range", "mul_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"TestbedConfig.{name}: {lo}..{hi} is not a range of non-negative ints")
        if not self.min_value <= self.start_range[0] <= self.start_range[1] <= self.max_value:
            raise ValueError("TestbedConfig.start_range must lie inside [min_value, max_value]")
        for name in PROB_FIELDS:
            check_range(self, name, 0, 1)
        check(all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in self.op_weights)
              and sum(self.op_weights) > 0, "op_weights",
              f"must be finite weights >= 0 with a positive sum, got {list(self.op_weights)}")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"TestbedConfig.scenarios: unknown {unknown}; known {sorted(SCENARIOS)}")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Templates of one story. Placeholders: {name} {sub} {obj} {pos} {item} {friend} {thing}
    {a} (start) {n} (operand) {k} (multiplier) {r} (running value)."""

    items: tuple[str, ...]
    start: tuple[str, ...]
    add: tuple[str, ...]
    sub: tuple[str, ...]
    mul: tuple[str, ...]  # uses {k}; "doubles"/"triples" forms live in MUL_WORDS
    question: tuple[str, ...]
    initial: tuple[str, ...]
    goal: tuple[str, ...]
    state: tuple[str, ...]
    final: tuple[str, ...]
    mul_words: tuple[str, ...] = ()  # with {times}: "doubles" (k=2) or "triples" (k=3)


def _load_scenarios() -> dict[str, Scenario]:
    """The stories in scenarios.yaml beside this module, in file order."""
    from importlib.resources import files

    import yaml

    data = yaml.safe_load((files("jaxcot.testbed") / "scenarios.yaml").read_text(encoding="utf-8"))
    return {name: Scenario(**{k: tuple(v) for k, v in parts.items()}) for name, parts in data.items()}


SCENARIOS: dict[str, Scenario] = _load_scenarios()

NAMES = (("Mia", "f"), ("Emma", "f"), ("Lily", "f"), ("Zoe", "f"), ("Anna", "f"), ("Sara", "f"),
         ("Tom", "m"), ("Sam", "m"), ("Leo", "m"), ("Ben", "m"), ("Jack", "m"), ("Max", "m"))
PRONOUNS = {"f": {"sub": "she", "obj": "her", "pos": "her"}, "m": {"sub": "he", "obj": "him", "pos": "his"}}
FRIENDS = ("a friend", "a neighbor", "a classmate", "a cousin")
THINGS = ("book", "toy", "snack", "ticket", "game")
TIMES_WORDS = {2: "doubles", 3: "triples"}
STEP_PREFIX = ("Then", "After that,", "Later,", "Next,")
FIRST_PREFIX = "First,"

OPENERS = ("Okay, let us work through this step by step.", "Alright, let me think about this carefully.",
           "Let us solve this one step at a time.", "Okay, so let me figure this out.")
EQ_LEADS = {
    "add": ("So we add:", "That means we add:", "So I need to add:", "Adding, we get"),
    "sub": ("So we subtract:", "That means we take away:", "So I need to subtract:", "Subtracting, we get"),
    "mul": ("So we multiply:", "That means we multiply:", "So I need to multiply:", "Multiplying, we get"),
}
RECHECKS = ("Let me double check: {eq}. Yes, that is right.", "Checking again, {eq}, so that is correct.",
            "Just to be sure, {eq}. Good.")
HEDGES = ("Hmm, I think that is correct so far.", "Wait, let me make sure I read that right. Yes, I did.",
          "That seems reasonable.", "Okay, good.")
# A verification round opens with "Wait", as a reasoning model's reflections do (DEER's trigger).
VERIFIES = ("Wait, let me verify this once more from the start: {eqs}. So it is {r}.",
            "Wait, let me double check the whole thing: {eqs}. Yes, {r}.",
            "Wait, let me go through it all again: {eqs}. That gives {r} again.")
REVIEWS = ("Let me go over it once more: {eqs}. Everything checks out.", "Quick review: {eqs}. It all adds up.")
ANSWER = "The answer is {r}."


class _Chain:
    """Appends text segments with a role; keeps `[start, end, role]` spans that tile the text."""

    def __init__(self):
        self.parts: list[str] = []
        self.spans: list[list] = []
        self.pos = 0

    def add(self, text: str, role: str, *, space: bool = True) -> None:
        if space and self.pos and not self.parts[-1].endswith("\n"):
            text = " " + text
        start, self.pos = self.pos, self.pos + len(text)
        self.parts.append(text)
        if self.spans and self.spans[-1][2] == role:
            self.spans[-1][1] = self.pos
        else:
            self.spans.append([start, self.pos, role])

    def paragraph(self) -> None:
        if self.pos:
            self.add("\n\n", "space", space=False)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def capitalize(s: str) -> str:
    return s[:1].upper() + s[1:]


def _equation(left: int, op: str, right: int, result: int) -> str:
    return f"{left} {SYMBOL[op]} {right} = {result}"


def _apply(op: str, left: int, right: int) -> int:
    return left + right if op == "add" else left - right if op == "sub" else left * right


def _draw_steps(rng: random.Random, cfg: TestbedConfig) -> tuple[int, list[dict]]:
    value = rng.randint(*cfg.start_range)
    start, steps = value, []
    for _ in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        choices = []
        for op, w in zip(cfg.ops, cfg.op_weights):
            lo, hi = cfg.mul_range if op == "mul" else cfg.operand_range
            ok = [n for n in range(lo, hi + 1) if cfg.min_value <= _apply(op, value, n) <= cfg.max_value]
            if op == "mul":
                ok = [n for n in ok if n >= 2 and value >= 1]
            if ok and w > 0:
                choices.append((op, w, ok))
        if not choices:
            raise ValueError(f"TestbedConfig {cfg}: no operation keeps value {value} inside "
                             f"[{cfg.min_value}, {cfg.max_value}]")
        op, _, ok = rng.choices(choices, weights=[c[1] for c in choices])[0]
        n = rng.choice(ok)
        steps.append({"op": op, "left": value, "right": n, "result": _apply(op, value, n)})
        value = steps[-1]["result"]
    return start, steps


def make_problem(seed: int, index: int, cfg: TestbedConfig = TestbedConfig()) -> dict:
    """One testbed record (see module docstring); a pure function of (seed, index, cfg)."""
    rng = random.Random(f"jaxcot-testbed:{seed}:{index}")
    scen_name = rng.choice(cfg.scenarios or tuple(SCENARIOS))
    scen = SCENARIOS[scen_name]
    name, gender = rng.choice(NAMES)
    slots = dict(PRONOUNS[gender], name=name, item=rng.choice(scen.items), friend=rng.choice(FRIENDS),
                 thing=rng.choice(THINGS))
    start, steps = _draw_steps(rng, cfg)
    fill = lambda t, **kw: t.format(**slots, **kw)  # noqa: E731

    # Question: start sentence, one clause per step (prefix reused in the chain), question.
    clauses, prefixes = [], []
    for i, st in enumerate(steps):
        if st["op"] == "mul" and st["right"] in TIMES_WORDS and scen.mul_words and rng.random() < 0.5:
            clause = fill(rng.choice(scen.mul_words), times=TIMES_WORDS[st["right"]])
        else:
            clause = fill(rng.choice(getattr(scen, st["op"])), n=st["right"], k=st["right"])
        clauses.append(clause)
        prefixes.append(None if i == 0 else rng.choice(STEP_PREFIX))
    q = [fill(rng.choice(scen.start), a=start)]
    for clause, prefix in zip(clauses, prefixes):
        q.append(capitalize(clause) + "." if prefix is None else f"{prefix} {clause}.")
    q.append(fill(rng.choice(scen.question)))
    question = " ".join(q)

    c = _Chain()
    c.add(rng.choice(OPENERS), "filler")
    if rng.random() < cfg.goal_prob:
        c.add(fill(rng.choice(scen.goal)), "restatement")
    c.paragraph()
    c.add(fill(rng.choice(scen.initial), a=start), "restatement")
    for i, (st, clause) in enumerate(zip(steps, clauses)):
        c.paragraph()
        c.add(FIRST_PREFIX if i == 0 else prefixes[i], "connective")  # the question's own prefix
        c.add(clause + ".", "restatement")
        c.add(rng.choice(EQ_LEADS[st["op"]]), "connective")
        c.add(str(st["left"]), "operand")
        c.add(SYMBOL[st["op"]], "operator")
        c.add(str(st["right"]), "operand")
        c.add("=", "equals")
        c.add(str(st["result"]), "step_result")
        if rng.random() < cfg.unit_prob:
            c.add(slots["item"], "quantity_word")
        c.add(".", "punct", space=False)
        if rng.random() < cfg.state_prob:
            c.add(fill(rng.choice(scen.state), r=st["result"]), "restatement")
        if rng.random() < cfg.recheck_prob:
            eq = _equation(st["left"], st["op"], st["right"], st["result"])
            c.add(rng.choice(RECHECKS).format(eq=eq.replace(" = ", " is ", 1) if rng.random() < 0.5 else eq), "recheck")
        if rng.random() < cfg.hedge_prob:
            c.add(rng.choice(HEDGES), "hedge")
    result = steps[-1]["result"]
    c.paragraph()
    c.add(fill(rng.choice(scen.final), r=result), "restatement")
    if rng.random() < cfg.review_prob:
        eqs = ", then ".join(_equation(s["left"], s["op"], s["right"], s["result"]) for s in steps)
        c.add(rng.choice(REVIEWS).format(eqs=eqs), "recheck")
    for _ in range(cfg.verify_rounds):  # no draws when 0: records of older configs stay the same
        c.paragraph()
        eqs = ", then ".join(_equation(s["left"], s["op"], s["right"], s["result"]) for s in steps)
        c.add(rng.choice(VERIFIES).format(eqs=eqs, r=result), "recheck")
    # The answer line follows on its own line, so chain + answer is the whole completion, as
    # `jaxcot.text.answers.split_answer` cuts a generated one.
    c.add("\n", "space", space=False)
    return {
        "id": f"testbed-{seed}-{index}",
        "question": question,
        "chain": c.text,
        "answer": ANSWER.format(r=result),
        "gold": str(result),
        "roles": c.spans,
        "start": start,
        "steps": steps,
        "scenario": scen_name,
    }


def generate(n: int, seed: int = 0, cfg: TestbedConfig = TestbedConfig(), *, offset: int = 0) -> Iterator[dict]:
    """Records `offset .. offset+n-1` of `seed` (disjoint index ranges give disjoint splits)."""
    for i in range(offset, offset + n):
        yield make_problem(seed, i, cfg)
