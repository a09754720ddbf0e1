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
    ('refuse') or keeps its last tokens ('truncate', logged).
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


__all__ = ["DTYPES", "OVERFLOW", "QUANTIZE", "SOURCES", "GenerateConfig", "SamplingConfig"]
