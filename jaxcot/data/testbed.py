"""The arithmetic testbed: multi-step word problems with verbose chains and ground-truth roles.

Each record is a Trace record (`id`, `question`, `chain`, `answer`, `gold`) plus:
- `roles`: `[[start, end, role], ...]` character spans that tile `chain` exactly, so any
  tokenizer's tokens map to roles through their offsets (`token_roles`).
- `start`, `steps` (`[{"op", "left", "right", "result"}, ...]`) and `scenario`: the problem itself.

Roles. Essential (needed to reach the answer): `operand`, `operator`, `equals`, `step_result`,
the tokens of the working equations. Everything else is removable: `restatement` (the question's
facts and running totals said again), `recheck` (re-stating an equation and calling it right; it
never catches an error, so it is true filler), `hedge`, `filler` (openers, interjections),
`connective`, `quantity_word` (the unit after a result), `punct`, and `space` (paragraph breaks;
any whitespace-only token). Numbers inside restatements and re-checks are copies, not operands.

Generation is deterministic: record `i` of seed `s` depends only on (s, i, config).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Iterable, Iterator, Sequence

ESSENTIAL_ROLES = ("step_result", "operand", "operator", "equals")  # priority order inside a token
FILLER_ROLES = ("restatement", "recheck", "hedge", "filler", "connective", "quantity_word", "punct", "space")
ROLES = ESSENTIAL_ROLES + FILLER_ROLES
OPS = ("add", "sub", "mul")
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


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
    scenarios: tuple[str, ...] = ()  # empty: all of SCENARIOS

    def __post_init__(self):
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"TestbedConfig.ops: {self.ops} (each one of {OPS})")
        if len(self.op_weights) != len(self.ops):
            raise ValueError(f"TestbedConfig.op_weights: {len(self.op_weights)} weights for {len(self.ops)} ops")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"TestbedConfig: need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        for name in ("start_range", "operand_range", "mul_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"TestbedConfig.{name}: {lo}..{hi} is not a range of non-negative ints")
        if not self.min_value <= self.start_range[0] <= self.start_range[1] <= self.max_value:
            raise ValueError("TestbedConfig.start_range must lie inside [min_value, max_value]")
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


SCENARIOS: dict[str, Scenario] = {
    "collect": Scenario(
        items=("apples", "marbles", "stickers", "cards", "shells", "coins", "stamps", "pencils"),
        start=("{name} has {a} {item}.", "{name} collects {a} {item}."),
        add=("{sub} buys {n} more {item}", "{sub} finds {n} more {item}", "{sub} gets {n} more {item} from {friend}"),
        sub=("{sub} gives {n} {item} to {friend}", "{sub} loses {n} {item}", "{sub} sells {n} {item}"),
        mul=("{sub} ends up with {k} times as many {item}",),
        question=("How many {item} does {name} have now?", "How many {item} does {name} have in the end?"),
        initial=("{name} starts with {a} {item}.", "At the start, {name} has {a} {item}."),
        goal=("We need to find how many {item} {name} has at the end.", "The question asks how many {item} {name} has now."),
        state=("Now {sub} has {r} {item}.", "So {name} has {r} {item} at this point."),
        final=("So, after all of that, {name} has {r} {item}.", "In the end, {name} has {r} {item}."),
        mul_words=("the number of {item} {sub} has {times}",),
    ),
    "bus": Scenario(
        items=("passengers",),
        start=("A bus has {a} {item}.", "There are {a} {item} on a bus."),
        add=("{n} more {item} get on", "{n} {item} get on at the next stop"),
        sub=("{n} {item} get off", "{n} {item} get off at the next stop"),
        mul=("the number of {item} becomes {k} times as large",),
        question=("How many {item} are on the bus now?", "How many {item} are on the bus at the end?"),
        initial=("The bus starts with {a} {item}.", "At first, there are {a} {item} on the bus."),
        goal=("We need to find how many {item} are on the bus at the end.",),
        state=("Now there are {r} {item} on the bus.", "So the bus has {r} {item} at this point."),
        final=("So, after all the stops, there are {r} {item} on the bus.", "In the end, the bus has {r} {item}."),
        mul_words=("the number of {item} {times} at the big station",),
    ),
    "shop": Scenario(
        items=("books", "toys", "jars", "boxes", "cakes", "hats"),
        start=("A shop has {a} {item} on a shelf.", "There are {a} {item} on a shelf in a shop."),
        add=("the owner adds {n} more {item}", "a delivery brings {n} more {item}"),
        sub=("customers buy {n} {item}", "the owner sells {n} {item}"),
        mul=("the shelf gets {k} times as many {item}",),
        question=("How many {item} are on the shelf now?", "How many {item} are on the shelf at the end?"),
        initial=("The shelf starts with {a} {item}.", "At first, there are {a} {item} on the shelf."),
        goal=("We need to find how many {item} are on the shelf at the end.",),
        state=("Now there are {r} {item} on the shelf.", "So the shelf holds {r} {item} at this point."),
        final=("So, in the end, there are {r} {item} on the shelf.", "In the end, the shelf holds {r} {item}."),
        mul_words=("the number of {item} on the shelf {times}",),
    ),
    "bake": Scenario(
        items=("cookies", "muffins", "cupcakes", "rolls"),
        start=("{name} bakes {a} {item}.", "{name} makes {a} {item} for a party."),
        add=("{sub} bakes {n} more {item}", "{friend} brings {n} more {item}"),
        sub=("{sub} eats {n} {item}", "{sub} gives {n} {item} to {friend}"),
        mul=("{sub} bakes until {sub} has {k} times as many {item}",),
        question=("How many {item} does {name} have now?", "How many {item} are left at the end?"),
        initial=("{name} starts with {a} {item}.", "At the start, there are {a} {item}."),
        goal=("We need to find how many {item} {name} has at the end.",),
        state=("Now {sub} has {r} {item}.", "So there are {r} {item} at this point."),
        final=("So, after all of that, {name} has {r} {item}.", "In the end, there are {r} {item}."),
        mul_words=("the number of {item} {times} after another batch",),
    ),
    "money": Scenario(
        items=("dollars",),
        start=("{name} has {a} {item}.", "{name} saves {a} {item}."),
        add=("{sub} earns {n} {item}", "{friend} gives {obj} {n} {item}"),
        sub=("{sub} spends {n} {item} on a {thing}", "{sub} pays {n} {item} for a {thing}"),
        mul=("{sub} ends up with {k} times as much money",),
        question=("How many {item} does {name} have now?", "How much money does {name} have in the end?"),
        initial=("{name} starts with {a} {item}.", "At the start, {name} has {a} {item}."),
        goal=("We need to find how many {item} {name} has at the end.",),
        state=("Now {sub} has {r} {item}.", "So {name} has {r} {item} at this point."),
        final=("So, after all of that, {name} has {r} {item}.", "In the end, {name} has {r} {item}."),
        mul_words=("{pos} savings {times}",),
    ),
}

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


def _cap(s: str) -> str:
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
        q.append(_cap(clause) + "." if prefix is None else f"{prefix} {clause}.")
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
    # The answer line follows on its own line, so chain + answer is the whole completion, as
    # `split_chain_answer` cuts a generated one.
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


# ---------------------------------------------------------------- roles per token


def char_roles(record: dict) -> list[str]:
    """Role of every character of `record["chain"]`: list[str] of length len(chain).

    Raises ValueError when the spans do not tile the chain exactly.
    """
    chain, spans = record["chain"], record["roles"]
    out: list[str] = []
    pos = 0
    for start, end, role in spans:
        if start != pos or end < start or role not in ROLES:
            raise ValueError(f"record {record.get('id')!r}: bad role span {[start, end, role]} at char {pos}")
        out.extend([role] * (end - start))
        pos = end
    if pos != len(chain):
        raise ValueError(f"record {record.get('id')!r}: role spans cover {pos} of {len(chain)} chars")
    return out


def offsets_from_pieces(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character offsets [(start, end)] of consecutive text pieces (a scored record's `pieces`)."""
    out, pos = [], 0
    for p in pieces:
        out.append((pos, pos + len(p)))
        pos += len(p)
    return out


def token_roles(record: dict, offsets: Iterable[tuple[int, int]]) -> list[str]:
    """One role per token, from token character offsets [(start, end)] into `record["chain"]`.

    A token with no characters gets "none"; an all-whitespace token gets "space"; a token that
    touches an essential character gets the highest-priority essential role among them
    (step_result > operand > operator > equals), so merged pieces like " 17." count as results;
    otherwise the role of its first non-space character.
    """
    chain = record["chain"]
    roles = char_roles(record)
    rank = {r: i for i, r in enumerate(ESSENTIAL_ROLES)}
    out = []
    for start, end in offsets:
        if not 0 <= start <= end <= len(chain):
            raise ValueError(f"record {record.get('id')!r}: token offset {(start, end)} outside chain of {len(chain)} chars")
        idx = [i for i in range(start, end) if not chain[i].isspace()]
        if start == end:
            out.append("none")
        elif not idx:
            out.append("space")
        else:
            ess = [roles[i] for i in idx if roles[i] in rank]
            out.append(min(ess, key=rank.__getitem__) if ess else roles[idx[0]])
    return out


def essential_mask(roles: Sequence[str]) -> list[bool]:
    """True where a token's role is needed to reach the answer (the equations' tokens)."""
    return [r in ESSENTIAL_ROLES for r in roles]


_WORKING_EQUATION = re.compile(
    "(?:" + "|".join(re.escape(lead) for leads in EQ_LEADS.values() for lead in leads) + r") (\d+ [-+*] \d+ = \d+)"
)


def working_equation_chars(chain: str) -> list[bool]:
    """True on the characters of the chain's working equations (`a op b = r` after a step's lead),
    False elsewhere, including equations re-stated by re-checks and reviews.

    For any text in the testbed's format, a reference chain or a chain a model wrote, this equals
    the essential roles of `char_roles` on the non-space characters: the roles of a generated
    chain, which carries no role spans.
    """
    out = [False] * len(chain)
    for m in _WORKING_EQUATION.finditer(chain):
        out[m.start(1):m.end(1)] = [not c.isspace() for c in m.group(1)]
    return out


def equation_oracle(pieces: Sequence[str]) -> list[float]:
    """Ground-truth importance per chain token [n]: 1.0 where the token touches a working
    equation's character, else 0.0 (`pieces` are the scored record's chain pieces)."""
    chars = working_equation_chars("".join(pieces))
    return [float(any(chars[a:b])) for a, b in offsets_from_pieces(pieces)]


# ---------------------------------------------------------------- tokenizer


def template_texts() -> list[str]:
    """Every template word in every casing and position, so a tokenizer built from these covers
    any generated text (names, items, numbers' digits, punctuation, '[SKIP]')."""
    pieces: list[str] = []
    strings: list[str] = list(OPENERS) + list(RECHECKS) + list(HEDGES) + list(REVIEWS) + [ANSWER, FIRST_PREFIX]
    strings += list(STEP_PREFIX) + list(FRIENDS) + list(THINGS) + list(TIMES_WORDS.values()) + list(SYMBOL.values())
    strings += [w for lead in EQ_LEADS.values() for w in lead] + [n for n, _ in NAMES]
    strings += [w for p in PRONOUNS.values() for w in p.values()] + ["is", "then", "[SKIP]"]
    for scen in SCENARIOS.values():
        for field in dataclasses.fields(scen):
            strings += list(getattr(scen, field.name))
    for s in strings:
        words = re.sub(r"\{[a-z]+\}", " ", s).split()
        for w in words:
            pieces.append(f"{w} {w} {_cap(w)} {_cap(w)} ({w}\n{_cap(w)}")
    pieces.append(" ".join("0123456789") + " " + "".join("0123456789") + " - 1 , 2 . 3 : [SKIP] \n[SKIP]\n\n")
    return pieces


def build_testbed_tokenizer(sample: int = 500, seed: int = 0, cfg: TestbedConfig = TestbedConfig(),
                            extra_tokens: Iterable[str] = ()):
    """Word-level HF tokenizer (`build_word_tokenizer`) covering every testbed template word in
    every casing, digits as single tokens, plus `sample` generated records' texts."""
    from jaxcot.data.wordtok import build_word_tokenizer

    from tokenizers import Regex, pre_tokenizers

    texts = template_texts()
    for rec in generate(sample, seed, cfg):
        texts += [rec["question"], rec["chain"], rec["answer"]]
    tok = build_word_tokenizer(texts, extra_tokens=extra_tokens, attach_space=True)
    # Compressed chains join kept pieces, which can glue a paragraph's first word to the word
    # before it ("thatThen"). Testbed text has no apostrophes or hyphens inside words and every
    # piece without a leading space starts with a capital, so splitting a capitalised word off a
    # letter makes any join of pieces tokenizable (and decoding stays exact).
    backend = tok.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [backend.pre_tokenizer, pre_tokenizers.Split(Regex(r"(?<=[a-zA-Z])[A-Z][a-z]+"), behavior="isolated")])
    return tok


def check_roundtrip(tokenizer, texts: Iterable[str]) -> None:
    """Raise ValueError naming the first text that does not encode/decode exactly or has <unk>."""
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk in ids:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"tokenizer has no piece for part of {text[:60]!r}... (tokens {pieces[:20]})")
        back = tokenizer.decode(ids)
        if back != text:
            raise ValueError(f"tokenizer round trip changed {text[:60]!r} into {back[:60]!r}")


def chain_stats(records: Iterable[dict], tokenizer) -> dict:
    """Token statistics of testbed records under `tokenizer`: chain length (mean, percentiles),
    question and answer lengths, and each role's share of all chain tokens."""
    import numpy as np

    lengths, q_lens, a_lens, counts = [], [], [], dict.fromkeys(ROLES + ("none",), 0)
    for rec in records:
        enc = tokenizer(rec["chain"], return_offsets_mapping=True, add_special_tokens=False)
        for role in token_roles(rec, enc["offset_mapping"]):
            counts[role] += 1
        lengths.append(len(enc["input_ids"]))
        q_lens.append(len(tokenizer(rec["question"], add_special_tokens=False)["input_ids"]))
        a_lens.append(len(tokenizer(rec["answer"], add_special_tokens=False)["input_ids"]))
    if not lengths:
        raise ValueError("chain_stats: no records")
    total = sum(counts.values())
    share = {r: counts[r] / total for r in counts if counts[r]}
    arr = np.asarray(lengths)
    return {
        "records": len(lengths),
        "chain_tokens": {"mean": float(arr.mean()), "p10": float(np.percentile(arr, 10)),
                         "p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
                         "min": int(arr.min()), "max": int(arr.max())},
        "question_tokens_mean": float(np.mean(q_lens)),
        "answer_tokens_mean": float(np.mean(a_lens)),
        "role_share": share,
        "essential_share": sum(share.get(r, 0.0) for r in ESSENTIAL_ROLES),
        "removable_share": 1.0 - sum(share.get(r, 0.0) for r in ESSENTIAL_ROLES),
    }
