"""Rewards: plain functions `(prompts, completions, records) -> list[float]`, one value per
completion, and their weighted sum from a config.

prompts: the questions as asked; completions: the generated texts (EOS and stop string cut);
records: per completion, the question's record ({id, question, gold, ...}) plus
`completion_tokens` (generated tokens, EOS included) and `finish_reason`. The built-in ones
reproduce step entropy's GRPO rewards (docs/method.md, "GRPO"); any `module:function` of the
same signature can join them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Sequence

from jaxcot.config import check
from jaxcot.registry import Registry
from jaxcot.text.answers import split_answer
from jaxcot.text.grading import check_grader_name, get_grader

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[dict]], list[float]]
STEP_BREAK = re.compile(r"\n[ \t]*\n")  # a blank line ends a step (the step rules' default)


def correct(prompts, completions, records, *, grader: str = "gsm8k") -> list[float]:
    """1.0 where the completion's answer grades equal to the record's `gold`, else 0.0."""
    grade = get_grader(grader)
    return [float(bool(r.get("gold") is not None and grade(c, str(r["gold"])))) for c, r in zip(completions, records)]


def chain_steps(text: str) -> list[str]:
    """The chain's steps (its text before the answer, split at blank lines), empty ones dropped."""
    chain, _ = split_answer(text)
    return [s.strip() for s in STEP_BREAK.split(chain) if s.strip()]


def skip_share(prompts, completions, records, *, marker: str = "[SKIP]",
               levels: Sequence[Sequence[float]] = ((0.8, 1.0), (0.5, 0.5))) -> list[float]:
    """The bonus of the highest level whose share is reached by the fraction of the chain's steps
    that are exactly `marker` (levels: [[share, bonus], ...]); 0 for a chain without steps."""
    ordered = sorted(((float(a), float(b)) for a, b in levels), reverse=True)
    out = []
    for c in completions:
        steps = chain_steps(c)
        share = sum(s == marker for s in steps) / len(steps) if steps else 0.0
        out.append(next((bonus for level, bonus in ordered if share >= level), 0.0))
    return out


def skip_count(prompts, completions, records, *, marker: str = "[SKIP]", limit: int = 100) -> list[float]:
    """1.0 where the completion holds more than `limit` markers (a penalty with a negative weight)."""
    return [float(c.count(marker) > limit) for c in completions]


def length(prompts, completions, records, *, limit: int = 3500) -> list[float]:
    """1.0 where the completion has more than `limit` tokens (a penalty with a negative weight)."""
    return [float(r["completion_tokens"] > limit) for r in records]


def answer_format(prompts, completions, records) -> list[float]:
    """1.0 where the completion ends with a final-answer sentence and stopped by itself (not cut
    at the length limit)."""
    return [float(bool(split_answer(c)[1].strip()) and r.get("finish_reason") != "length")
            for c, r in zip(completions, records)]


REWARDS: Registry[RewardFn] = Registry("reward")
for _name, _fn in {"correct": correct, "skip_share": skip_share, "skip_count": skip_count, "length": length,
                   "format": answer_format}.items():
    REWARDS.register(_name, _fn)


@dataclasses.dataclass
class RewardSpec:
    """One term of the reward: `weight` x `name`(..., **args); name: a `REWARDS` name or
    'package.module:function'."""

    name: str
    weight: float = 1.0
    args: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check(REWARDS.known(self.name), "name",
              f"must be one of {REWARDS.names()} or 'module:function', got {self.name!r}")
        check(math.isfinite(self.weight), "weight", f"must be a finite number, got {self.weight!r}")
        try:  # a 'module:function' reward is imported now, so a missing one fails before any work
            REWARDS.load(self.name)
        except ValueError as e:
            check(False, "name", str(e))
        if self.name == "correct" and "grader" in self.args:
            check_grader_name(self.args["grader"], key="args.grader")

    def function(self) -> Callable:
        return REWARDS.get(self.name)


def step_entropy_rewards() -> list[RewardSpec]:
    """Step entropy's four terms: +2 correct; +1 at >= 80% [SKIP] steps (+0.5 at 50%); -2 past
    100 [SKIP]s; -1 past 3,500 tokens."""
    return [
        RewardSpec("correct", 2.0),
        RewardSpec("skip_share", 1.0),
        RewardSpec("skip_count", -2.0, {"limit": 100}),
        RewardSpec("length", -1.0, {"limit": 3500}),
    ]


def with_grader(specs: Sequence[RewardSpec], grader: str) -> list[RewardSpec]:
    """The terms with `grader` given to each `correct` term that names none."""
    return [dataclasses.replace(s, args={"grader": grader, **s.args}) if s.name == "correct" else s for s in specs]


def score_rewards(specs: Sequence[RewardSpec], prompts: Sequence[str], completions: Sequence[str],
                  records: Sequence[dict]) -> tuple[list[float], dict[str, list[float]]]:
    """(total [N], {term name: its unweighted values [N]}) of the completions; a term returning
    the wrong number of values is an error naming it."""
    n = len(completions)
    total = [0.0] * n
    parts: dict[str, list[float]] = {}
    for spec in specs:
        values = [float(v) for v in spec.function()(list(prompts), list(completions), list(records), **spec.args)]
        if len(values) != n:
            raise ValueError(f"reward {spec.name!r} returned {len(values)} values for {n} completions")
        key = spec.name if spec.name not in parts else f"{spec.name}#{len(parts)}"
        parts[key] = values
        total = [t + spec.weight * v for t, v in zip(total, values)]
    return total, parts


__all__ = ["REWARDS", "RewardFn", "RewardSpec", "answer_format", "chain_steps", "correct", "length", "score_rewards",
           "skip_count", "skip_share", "step_entropy_rewards", "with_grader"]
