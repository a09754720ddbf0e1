"""The score stage's settings, with no jax: `jaxcot score`'s parser and a run config read them
without starting a backend."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from jaxcot.config import MeshConfig, check, check_choice, check_range
from jaxcot.generate.traces import unusable
from jaxcot.importance.encode import GOALS
from jaxcot.importance.scorers import DEFAULT_SCORERS, SCORERS
from jaxcot.text.answers import value_span
from jaxcot.text.prompts import PromptConfig

NORMS = ("l1", "l2")  # the norm of the goal-gradient at each token (docs/method.md)


@dataclasses.dataclass
class ScoreConfig:
    """Settings of the score stage (`jaxcot score` flags, a run config's `score:` section).

    layers: residual streams h^l perturbed (0 = embeddings; several are averaged; None: round(2/3 L),
    docs/method.md). norm: l1 | l2 of the goal-gradient. goal: which answer tokens' loss is
    differentiated, 'answer' (all) or 'value' (the answer's value, see `encode_trace`).
    only_correct: skip traces marked incorrect (`correct: false`; unmarked ones are scored); traces
    that cannot be scored are always skipped (`skip_reason`).
    prompt: the prompt generation used (None: generation's default). sep: text between chain and
    answer ("" for generated traces).
    scorers: the scorers run, in order, each adding its fields to ``scores``
    (`jaxcot.importance.scorers.SCORERS` names, or 'package.module:function').
    dtype: weights and compute. llmlingua: the LLMLingua-2 checkpoint folder the 'llmlingua'
    scorer reads (naming a folder adds the scorer). options: settings of scorers by name, e.g.
    {integrated_gradients: {steps: 16}, counterfactual: {chunk: 8}, reference: {model: PATH}}.
    mesh: the devices the pass runs on (default: every device on data, the whole model on each);
    fsdp > 1 shards the weights, for models whose weights fill a device (docs/plan.md). remat: the
    backward recomputes each block, so one block's gathered weights live at a time (what lets
    fsdp shrink memory). Neither changes the scores beyond float rounding; neither is part of a
    scored file's fingerprint.
    """

    scorers: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_SCORERS))
    layers: list[int] | None = None
    norm: str = "l1"
    goal: str = "answer"
    batch_size: int = 8
    only_correct: bool = True
    prompt: PromptConfig | None = None
    sep: str = ""
    dtype: str = "float32"
    llmlingua: str | None = None
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    remat: bool = False
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_choice(self, "norm", NORMS)
        check_choice(self, "goal", GOALS)
        check_choice(self, "dtype", ("float32", "bfloat16"))
        check_range(self, "batch_size", 1)
        if self.llmlingua and "llmlingua" not in self.scorers:
            self.scorers = [*self.scorers, "llmlingua"]
        check(len(self.scorers) > 0 and len(set(self.scorers)) == len(self.scorers), "scorers",
              f"must be a non-empty list without repeats, got {self.scorers}")
        for name in self.scorers:
            check(SCORERS.known(name), "scorers", f"unknown scorer {name!r}: must be one of {SCORERS.names()} "
                  "or 'package.module:function'")
        check(self.layers is None or (len(self.layers) > 0 and min(self.layers) >= 0), "layers",
              f"must be a non-empty list of layers >= 0 (0 = the embeddings), got {self.layers}")

    def settings(self) -> dict[str, Any]:
        """What the scores depend on: every setting but how the pass is laid out (mesh, remat)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("mesh", "remat")}

    def skip_reason(self, trace: dict[str, Any]) -> str | None:
        """Why the stage leaves `trace` out, or None (it is scored): the reasons of
        `jaxcot.generate.traces.unusable` ('truncated', 'no_answer'), then 'incorrect' (marked
        `correct: false`, with `only_correct`), then 'no_value' (goal 'value' and the answer holds
        no value, `jaxcot.text.answers.value_span`). The one rule of which traces get scored."""
        if why := unusable(trace):
            return why
        if self.only_correct and trace.get("correct") is False:
            return "incorrect"
        answer, gold = trace.get("answer"), trace.get("gold")
        if self.goal == "value" and isinstance(answer, str) and value_span(answer, gold and str(gold)) is None:
            return "no_value"
        return None

    def selects(self, trace: dict[str, Any]) -> bool:
        """Whether the stage scores `trace` (`skip_reason` is None)."""
        return self.skip_reason(trace) is None


def select_traces(traces: Sequence[dict[str, Any]], cfg: ScoreConfig) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(the traces `cfg` scores, {reason: count} of those it leaves out; `ScoreConfig.skip_reason`)."""
    picked, skipped = [], {}
    for t in traces:
        why = cfg.skip_reason(t)
        if why is None:
            picked.append(t)
        else:
            skipped[why] = skipped.get(why, 0) + 1
    return picked, skipped


__all__ = ["GOALS", "NORMS", "ScoreConfig", "select_traces"]
