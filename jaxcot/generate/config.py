"""Generation's settings, with no jax: the CLI, the sampler and the generate stage share them, and
`jaxcot generate`'s parser and a run config read them without starting a backend."""

from __future__ import annotations

import dataclasses

from jaxcot.config import check, check_choice, check_counts, check_range
from jaxcot.text.grading import check_grader_name
from jaxcot.text.prompts import PromptConfig


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``temperature == 0`` is greedy (argmax).

    top_k: keep the k most likely tokens (0 = all). top_p: keep the smallest set of most likely
    tokens whose probability mass reaches top_p (1.0 = all). Both apply after temperature.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        check_range(self, "temperature", 0)
        check_range(self, "top_k", 0)
        check_range(self, "top_p", 0, 1, lo_open=True)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


CRITERIA = ("probability", "entropy")  # how an early exit judges its trial answer


@dataclasses.dataclass
class EarlyExitConfig:
    """Early exit inside the decode loop (DEER-style; `jaxcot.generate.engine`). After a token that
    ends a `boundary` (a reasoning step), the row tries the answer: `marker`, then up to
    `answer_tokens` greedy tokens (an `answer_end` string ends them sooner). The chain ends with that
    answer when the trial is confident: `criterion` 'probability' (mean probability of the answer
    tokens >= threshold) or 'entropy' (their mean entropy in nats <= threshold), and the last
    `agree` trials gave the same answer (Dynasor-CoT's consistency; 1 = this trial alone). No trial
    before `min_tokens` chain tokens. `cue`: the trial takes the place of the token that completes
    the boundary, as DEER's answer inducer takes the place of its "Wait" (the marker then follows
    the chain where that token would have; a rejected trial feeds it and goes on). `complete`: a
    trial whose answer has not ended (an `answer_end` or EOS) within `answer_tokens` is never
    confident, as DEER's answer must close its box."""

    enabled: bool = False
    boundary: list[str] = dataclasses.field(default_factory=lambda: ["\n\n"])
    marker: str = "The answer is"
    answer_tokens: int = 6
    answer_end: list[str] = dataclasses.field(default_factory=lambda: ["."])
    threshold: float = 0.95
    criterion: str = "probability"
    agree: int = 1
    min_tokens: int = 0
    cue: bool = False
    complete: bool = False

    def __post_init__(self):
        check_choice(self, "criterion", CRITERIA)
        check_counts(self, "answer_tokens", "agree")
        check_range(self, "min_tokens", 0)
        if self.criterion == "probability":
            check_range(self, "threshold", 0, 1)
        else:
            check_range(self, "threshold", 0)
        check(bool(self.marker), "marker", "the answer marker may not be empty")
        check(bool(self.boundary) and all(self.boundary), "boundary", "needs at least one non-empty string")
        check(all(self.answer_end), "answer_end", "an answer end may not be empty")


@dataclasses.dataclass
class EvictionConfig:
    """KV eviction under a budget (`jaxcot.generate.engine`): each row keeps at most `budget` chain
    tokens cached (0 = off), never the prompt or its last `window`; the lowest-priority by `scorer`
    go first (`jaxcot.generate.eviction.EVICTION_SCORERS`: attention, redundancy, recency, or
    'package.module:function')."""

    budget: int = 0
    window: int = 16
    scorer: str = "attention"

    def __post_init__(self):
        check_range(self, "budget", 0)
        check_range(self, "window", 0)
        check(not self.budget or self.window < self.budget, "window", "must be below the eviction budget")
        check(isinstance(self.scorer, str) and bool(self.scorer), "scorer", "names an eviction scorer")


@dataclasses.dataclass
class EngineConfig:
    """How the decode loop runs. continuous: `slots` rows decode at once and a finished row's slot
    takes the next prompt (continuous batching; `jaxcot.generate.engine`), the prompts of a call
    going through in queues of `queue` (0 = all at once). Each queue's results are handed over
    (written, for the generate stage) when it ends, and its last rows leave slots idle: 256
    prompts at 16 slots keep that tail to about one wave in sixteen while an interrupted
    generation loses at most one queue. Off: the static loop, a batch at a time. early_exit
    and eviction run in the continuous loop only."""

    continuous: bool = False
    slots: int = 16
    queue: int = 256
    early_exit: EarlyExitConfig = dataclasses.field(default_factory=EarlyExitConfig)
    eviction: EvictionConfig = dataclasses.field(default_factory=EvictionConfig)

    def __post_init__(self):
        check_counts(self, "slots")
        check_range(self, "queue", 0)
        check(self.continuous or not (self.early_exit.enabled or self.eviction.budget), "continuous",
              "early_exit and eviction run in the continuous loop: set engine.continuous=true")


SOURCES = ("model", "reference")
DTYPES = ("float32", "bfloat16")
OVERFLOW = ("refuse", "truncate")  # a prompt too long for the model's context (`jaxcot.generate.api.fit_context`)
QUANTIZE = (None, "int8")  # weight quantizations decoding can run (`jaxcot.models.quantize_int8`)


@dataclasses.dataclass
class GenerateConfig:
    """Settings of the generate stage (YAML: configs/generate.yaml; CLI flags override them).

    source: 'model' (the model writes the chains: the method) or 'reference' (the dataset's own
    worked solutions stand in for them; no model runs). Decoding: greedy at temperature 0, else
    sampling with top-k / top-p, each row from its own PRNG stream (`row_seed`); a row ends at
    EOS, a `stop` string or `max_new_tokens`. dtype: the weights' and compute dtype.
    save_token_stats adds each trace's token ids, log-probabilities and entropies. grader: how a
    trace with a gold answer is marked `correct`: gsm8k, math or 'module:function'
    (`jaxcot.text.grading.get_grader`); None: gsm8k. A run grades by its `data.grader` instead.
    overflow: a prompt that with max_new_tokens does not fit the model's context is refused
    ('refuse') or keeps its last tokens ('truncate', logged). engine: how the decode loop runs
    (`EngineConfig`: the static loop by default; continuous batching, early exit, KV eviction).
    """

    source: str = "model"
    prompt: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    max_new_tokens: int = 512
    batch_size: int = 8
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = dataclasses.field(default_factory=list)
    dtype: str = "float32"
    min_bucket: int = 16
    save_token_stats: bool = False
    grader: str | None = None
    overflow: str = "refuse"
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)

    def __post_init__(self):
        check_choice(self, "source", SOURCES)
        check_choice(self, "overflow", OVERFLOW)
        check_choice(self, "dtype", DTYPES)
        check_counts(self, "max_new_tokens", "batch_size", "min_bucket")
        self.sampling()  # temperature, top_k and top_p: SamplingConfig checks them
        check(all(self.stop), "stop", "a stop string may not be empty")
        check_grader_name(self.grader, optional=True)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


__all__ = ["CRITERIA", "EarlyExitConfig", "EngineConfig", "EvictionConfig",
           "DTYPES", "OVERFLOW", "QUANTIZE", "SOURCES", "GenerateConfig", "SamplingConfig"]
