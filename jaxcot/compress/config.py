"""The compress stage's methods and settings, with no jax: `jaxcot compress`'s parser and a run
config read them without starting a backend.

A method is (rule, importance, prompt format). The rule's own settings sit in its section
(`ads`, `static`, `step`; a plug-in rule's in `options`); what every token rule keeps or drops
whole in `tokens`; how examples are written in `builder`; which records are used in `filter`.
"""

from __future__ import annotations

import dataclasses
import re

from jaxcot.compress import builders, rebuild
from jaxcot.compress.registry import RULES
from jaxcot.config import ConfigError, check, check_choice, check_range, from_dict
from jaxcot.text.grading import check_grader_name

METHODS = {
    "original": ("original", None, "plain"),  # the uncompressed chains: the control's training set
    "gogi-ads": ("ads", "gogi", "plain"),
    # one GoGI-Skip student for any ratio: ADS at a ratio drawn per chain from `builder.gammas`,
    # the ratio in the prompt as TokenSkip puts it (docs/method.md, "One student, any ratio")
    "gogi-ads-ratio": ("ads", "gogi", "tokenskip"),
    "gogi-static": ("static", "gogi", "plain"),
    "tokenskip": ("static", "self_info", "tokenskip"),
    "selfinfo-ads": ("ads", "self_info", "plain"),
    "random": ("random", None, "plain"),
    "step-entropy": ("step", "entropy", "plain"),
    "oracle": ("static", "oracle", "plain"),  # testbed only: keep the working equations first
    "oracle-ads": ("ads", "oracle", "plain"),  # testbed only: GoGI-Skip's rule with the ground truth
}
DEFAULT_GAMMA = 0.55
UNITS = ("token", "number", "expression")


@dataclasses.dataclass
class AdsConfig:
    """Adaptive dynamic skipping (docs/method.md, ADS): the entropy-driven rate and the adaptive
    N-constraint."""

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
    anc: bool = True
    n_min: int = 1
    n_max: int = 6
    window: int = 8
    calibrate: bool = False  # shift gamma so the mean retained ratio meets gamma despite the N-constraint
    calibrate_tol: float = 0.005
    calibrate_iters: int = 20
    vocab_size: int | None = None  # None: the record's scores.vocab_size

    def __post_init__(self):
        check_choice(self, "zscore", ("trace", "fixed"))
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


@dataclasses.dataclass
class StaticConfig:
    """TokenSkip's static ratio: ties at the threshold all kept ('all') or broken by position."""

    ties: str = "all"

    def __post_init__(self):
        check_choice(self, "ties", ("all", "position"))


@dataclasses.dataclass
class StepConfig:
    """Step-entropy pruning: the share `kappa` of content steps with the lowest entropy replaced
    by `skip_marker`; steps split at `step_pattern`."""

    kappa: float = 0.8
    step_pattern: str = rebuild.DEFAULT_STEP_PATTERN
    step_agg: str = "sum"  # sum | mean
    protect_first_steps: int = 0
    protect_last_steps: int = 1  # the final step carries the result the answer restates
    skip_marker: str = "[SKIP]"

    def __post_init__(self):
        check_choice(self, "step_agg", ("sum", "mean"))
        check_range(self, "kappa", 0, 1)
        check_range(self, "protect_first_steps", 0)
        check_range(self, "protect_last_steps", 0)
        check(bool(self.skip_marker), "skip_marker", "may not be empty")
        try:
            re.compile(self.step_pattern)
        except re.error as e:
            raise ConfigError("step_pattern", f"is not a valid regular expression ({e}): {self.step_pattern!r}; "
                              "escape special characters with a backslash") from None


@dataclasses.dataclass
class TokensConfig:
    """What token rules keep or drop whole: units 'token', 'number' (a number split over several
    tokens) or 'expression' (arithmetic such as "13 + 7 = 20", and numbers outside it), kept when
    the rule keeps any of its pieces; unit_score: a unit's pieces ranked by their own score
    ('token') or the unit's mean or max. protect_trailing_ws: the chain's trailing whitespace
    (it separates the chain from the answer) is always kept."""

    units: str = "token"
    unit_score: str = "token"
    protect_trailing_ws: bool = True
    collapse_spaces: bool = False

    def __post_init__(self):
        check_choice(self, "units", UNITS)
        check_choice(self, "unit_score", rebuild.UNIT_SCORES)


@dataclasses.dataclass
class BuilderConfig:
    """How the SFT examples are written (`jaxcot.compress.builders`)."""

    gammas: tuple[float, ...] = builders.DEFAULT_GAMMAS  # TokenSkip's drawn ratios
    eot: str = "<|im_end|>"
    template: str = builders.TOKENSKIP_TEMPLATE
    prompt_style: str = "text"  # text | chat
    system: str | None = None
    answer_sep: str = ""

    def __post_init__(self):
        check_choice(self, "prompt_style", ("text", "chat"))
        check(len(self.gammas) > 0 and all(0 < g <= 1 for g in self.gammas), "gammas",
              f"must be a non-empty list of ratios in (0, 1], got {list(self.gammas)}")


@dataclasses.dataclass
class FilterConfig:
    """Which records become examples: correct ones only (`grader` for those without `correct`),
    and at most `max_tokens` prompt + completion tokens under `tokenizer` (a local HF folder) or
    `max_chain_tokens` compressed chain tokens."""

    only_correct: bool = True
    unverified: str = "drop"  # drop | keep traces with neither `correct` nor `gold`
    grader: str | None = None  # gsm8k | math | "module:function" (answer, gold) -> bool; None: gsm8k
    max_tokens: int | None = None
    max_chain_tokens: int | None = None
    tokenizer: str | None = None

    def __post_init__(self):
        check_choice(self, "unverified", ("drop", "keep"))
        check_range(self, "max_tokens", 1, optional=True)
        check_range(self, "max_chain_tokens", 0, optional=True)
        check_grader_name(self.grader, optional=True)


@dataclasses.dataclass
class CompressConfig:
    """Every setting of `jaxcot compress` (defaults: docs/method.md).

    rule: a `jaxcot.compress.registry.RULES` name or 'package.module:attribute' (None: the
    method's); importance: a `scores` field, or None for the method's; format: plain | tokenskip
    (None: the method's); gamma: retention (None: 0.55, except the TokenSkip format, which draws
    one per record from `builder.gammas`); seed: random importance and gamma draws; options: the
    settings of a plug-in rule (it reads them as it likes)."""

    method: str = "gogi-ads"
    rule: str | None = None
    importance: str | None = None
    format: str | None = None
    gamma: float | None = None
    seed: int = 0
    batch_size: int = 64
    ads: AdsConfig = dataclasses.field(default_factory=AdsConfig)
    static: StaticConfig = dataclasses.field(default_factory=StaticConfig)
    step: StepConfig = dataclasses.field(default_factory=StepConfig)
    tokens: TokensConfig = dataclasses.field(default_factory=TokensConfig)
    builder: BuilderConfig = dataclasses.field(default_factory=BuilderConfig)
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # a section given as a mapping, e.g. ads={"beta": 0.2}
            value = getattr(self, f.name)
            if f.name != "options" and isinstance(value, dict):
                setattr(self, f.name, from_dict(f.default_factory, value, f.name))
        check_choice(self, "method", sorted(METHODS))
        check(self.rule is None or RULES.known(self.rule), "rule",
              f"must be one of {RULES.names()} or 'package.module:attribute', got {self.rule!r}")
        check_choice(self, "format", ("plain", "tokenskip", None))
        check_range(self, "gamma", 0, 1, lo_open=True, optional=True)
        check_range(self, "batch_size", 1)

    def resolved(self) -> tuple[str, str | None, str]:
        """(rule, importance source, prompt format): the method's, unless set here."""
        rule, imp, fmt = METHODS[self.method]
        return self.rule or rule, self.importance or imp, self.format or fmt


__all__ = ["DEFAULT_GAMMA", "METHODS", "UNITS", "AdsConfig", "BuilderConfig", "CompressConfig", "FilterConfig",
           "StaticConfig", "StepConfig", "TokensConfig"]
