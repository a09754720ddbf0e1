"""The compress stage's methods and settings, with no jax: `jaxcot compress`'s parser and a run
config read them without starting a backend."""

from __future__ import annotations

import dataclasses

from jaxcot.compress import builders, rebuild
from jaxcot.config import check, check_choice, check_range
from jaxcot.text.grading import GRADER_NAMES

METHODS = {
    "original": ("none", None, "plain"),  # the uncompressed chains: the control's training set
    "gogi-ads": ("ads", "gogi", "plain"),
    "gogi-static": ("static", "gogi", "plain"),
    "tokenskip": ("static", "self_info", "tokenskip"),
    "selfinfo-ads": ("ads", "self_info", "plain"),
    "random": ("static", "random", "plain"),
    "step-entropy": ("step", "entropy", "plain"),
    "oracle": ("static", "oracle", "plain"),  # testbed only: keep the working equations first
    "oracle-ads": ("ads", "oracle", "plain"),  # testbed only: GoGI-Skip's rule with the ground truth
}
RULES = ("ads", "static", "step", "none")
DEFAULT_GAMMA = 0.55
UNITS = ("token", "number", "expression")


@dataclasses.dataclass
class CompressConfig:
    """Every knob of `jaxcot compress` (defaults: docs/method.md)."""

    method: str = "gogi-ads"
    rule: str | None = None  # ads | static | step; None: the method's
    importance: str | None = None  # a `scores` field or "random"; None: the method's
    gamma: float | None = None  # retention; None: 0.55, except TokenSkip format which draws from gammas
    seed: int = 0  # random importance and gamma draws
    # ADS: entropy-driven rate
    beta: float = 0.15
    gamma_min: float = 0.2
    gamma_max: float = 0.95
    eps: float = 1e-6
    zscore: str = "trace"  # trace (docs/method.md) | fixed: z from zscore_mean/std, a token's own entropy only
    zscore_mean: float | None = None  # None: mean entropy over all chain tokens compressed
    zscore_std: float | None = None
    trace_beta: float = 0.0  # trace-level shift: gamma += trace_beta * z(trace mean entropy vs dataset)
    dataset_entropy_mean: float | None = None  # None: from the records being compressed
    dataset_entropy_std: float | None = None
    # ADS: adaptive N-constraint
    anc: bool = True
    n_min: int = 1
    n_max: int = 6
    window: int = 8
    calibrate: bool = False  # shift gamma so the mean retained ratio meets gamma despite the N-constraint
    calibrate_tol: float = 0.005
    calibrate_iters: int = 20
    vocab_size: int | None = None  # None: the record's scores.vocab_size
    # static rule
    ties: str = "all"  # all | position
    # step entropy
    kappa: float = 0.8
    step_pattern: str = rebuild.DEFAULT_STEP_PATTERN
    step_agg: str = "sum"  # sum | mean
    protect_first_steps: int = 0
    protect_last_steps: int = 1  # the final step carries the result the answer restates
    skip_marker: str = "[SKIP]"
    # text
    protect_trailing_ws: bool = True  # the chain's trailing whitespace separates it from the answer
    # token rules: what is kept or dropped whole (kept when the rule keeps any of its pieces):
    # token | number (a number split over several tokens) | expression (arithmetic such as
    # "13 + 7 = 20", and numbers outside it)
    units: str = "token"
    unit_score: str = "token"  # token | mean | max: a unit's pieces ranked by their own or the unit's score
    collapse_spaces: bool = False
    # training-set builder
    format: str | None = None  # plain | tokenskip; None: the method's
    gammas: tuple[float, ...] = builders.DEFAULT_GAMMAS
    eot: str = "<|im_end|>"
    template: str = builders.TOKENSKIP_TEMPLATE
    prompt_style: str = "text"  # text | chat
    system: str | None = None
    answer_sep: str = ""
    only_correct: bool = True
    unverified: str = "drop"  # drop | keep traces with neither `correct` nor `gold`
    grader: str | None = None  # gsm8k | math | "module:function" (answer, gold) -> bool; None: gsm8k
    max_tokens: int | None = None  # prompt + completion tokens under `tokenizer`
    max_chain_tokens: int | None = None  # compressed chain tokens
    tokenizer: str | None = None  # local HF tokenizer folder for max_tokens
    batch_size: int = 64

    def __post_init__(self):
        check_choice(self, "method", sorted(METHODS))
        check_choice(self, "rule", RULES + (None,))
        check_choice(self, "format", ("plain", "tokenskip", None))
        check_choice(self, "units", UNITS)
        check_choice(self, "unit_score", rebuild.UNIT_SCORES)
        check_choice(self, "zscore", ("trace", "fixed"))
        check_choice(self, "ties", ("all", "position"))
        check_choice(self, "step_agg", ("sum", "mean"))
        check_choice(self, "prompt_style", ("text", "chat"))
        check_choice(self, "unverified", ("drop", "keep"))
        check_range(self, "gamma", 0, 1, lo_open=True, optional=True)
        check_range(self, "beta", 0)
        check_range(self, "gamma_min", 0, 1, lo_open=True)
        check_range(self, "gamma_max", 0, 1, lo_open=True)
        check(self.gamma_min <= self.gamma_max, "gamma_min", f"{self.gamma_min} must be <= gamma_max {self.gamma_max}")
        check_range(self, "eps", 0, lo_open=True)
        check_range(self, "zscore_std", 0, lo_open=True, optional=True)
        check_range(self, "dataset_entropy_std", 0, lo_open=True, optional=True)
        check_range(self, "n_min", 0)
        check_range(self, "n_max", 1)
        check(self.n_min <= self.n_max, "n_min", f"{self.n_min} must be <= n_max {self.n_max}")
        check_range(self, "window", 1)
        check_range(self, "calibrate_tol", 0, lo_open=True)
        check_range(self, "calibrate_iters", 1)
        check_range(self, "vocab_size", 2, optional=True)
        check_range(self, "kappa", 0, 1)
        check_range(self, "protect_first_steps", 0)
        check_range(self, "protect_last_steps", 0)
        check(bool(self.skip_marker), "skip_marker", "may not be empty")
        check(len(self.gammas) > 0 and all(0 < g <= 1 for g in self.gammas), "gammas",
              f"must be a non-empty list of ratios in (0, 1], got {list(self.gammas)}")
        check_range(self, "max_tokens", 1, optional=True)
        check_range(self, "max_chain_tokens", 0, optional=True)
        check_range(self, "batch_size", 1)
        check(self.grader is None or self.grader.lower().replace("-", "").replace("_", "") in GRADER_NAMES
              or ":" in self.grader, "grader", f"must be one of {sorted(GRADER_NAMES)} or 'module:function', "
              f"got {self.grader!r}")

    def resolved(self) -> tuple[str, str | None, str]:
        """(rule, importance source, prompt format): the method's, unless set here."""
        rule, imp, fmt = METHODS[self.method]
        return self.rule or rule, self.importance or imp, self.format or fmt


def check_knobs(knobs: dict, where: str = "") -> None:
    """Raise ValueError naming any key of `knobs` that is not a CompressConfig field."""
    unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(CompressConfig)})
    if unknown:
        known = sorted(f.name for f in dataclasses.fields(CompressConfig))
        raise ValueError(f"{where}unknown knob(s) {unknown}; known: {known}")


__all__ = ["DEFAULT_GAMMA", "METHODS", "RULES", "UNITS", "CompressConfig", "check_knobs"]
