"""`GRPOConfig`: one GRPO run after a student, loaded from YAML with `key=value` overrides.

    cfg = load_config(GRPOConfig, "configs/grpo-tiny.yaml", ["max_steps=20"])

Defaults follow step entropy's GRPO stage (docs/method.md, "GRPO"): LoRA r16 / alpha 32 /
dropout 0.05 on every projection, lr 1e-5, 8 generations per prompt at temperature 0.6, and its
four rewards; beta 0 (no reference pass) as in TRL's current default.
"""

from __future__ import annotations

import dataclasses
import os

from jaxcot.config import check, check_choice, check_counts, check_range
from jaxcot.distributed import DistributedConfig
from jaxcot.generate.config import EngineConfig, SamplingConfig
from jaxcot.rl.rewards import RewardSpec, step_entropy_rewards
from jaxcot.text.grading import check_grader_name
from jaxcot.text.prompts import PromptConfig
from jaxcot.train.config import CheckpointConfig, LogConfig, LoraConfig, MeshConfig, OptimConfig

LOSS_TYPES = ("grpo", "dapo")  # sequence-mean of token-means; token-mean over the batch


@dataclasses.dataclass
class PromptsConfig:
    """The questions GRPO samples from: `path` (a JSONL of {question, gold} or anything
    `jaxcot.data.questions.load_questions` reads), the first `limit`, asked with `prompt`."""

    path: str = ""
    split: str = "train"
    question_field: str = "question"
    answer_field: str | None = "answer"
    limit: int | None = None
    prompt: PromptConfig = dataclasses.field(default_factory=lambda: PromptConfig(template="{question}"))

    def __post_init__(self):
        check_range(self, "limit", 1, optional=True)


@dataclasses.dataclass
class GRPOConfig:
    """One GRPO run.

    init_from: the model folder to start from (a student's export); the reference policy of the
    KL term is this starting model. grader: how the `correct` reward grades (unless its args
    name one). Each step samples `num_generations` completions for each of
    `prompts_per_step` questions (questions in a seeded order, epoch after epoch), scores them
    with `rewards`, normalises the rewards within each question's group, and takes
    `num_iterations` optimizer steps on that batch (`grad_accum` micro-batches each); a
    completion is sampled with `sampling` (temperature > 0) for at most `max_new_tokens`.
    epsilon / epsilon_high: the ratio's clip range [1 - epsilon, 1 + epsilon_high] (default
    symmetric); loss_type 'grpo' (sequence-mean token-mean) or 'dapo' (token-mean);
    scale_rewards: divide by the group's std. max_steps counts rollout batches.
    rollout_batch_size: completions per sampler batch (None: a step's all in one); the batches
    are the unit several processes (`distributed`: one per host, as `TrainConfig`'s) split a
    step's rollouts by, as generation's. engine: how the rollouts decode (`EngineConfig`:
    continuous batching, early exit, KV eviction; None, as an engine left at its defaults: the
    static loop), each completion from its own stream either way. (None rather than an
    `EngineConfig()` default: a checkpoint or a run's policy recorded before this field existed
    still compares equal, every GRPO field being part of both.)
    """

    init_from: str = ""
    output_dir: str = "runs/grpo"
    export_dir: str | None = None
    export: bool = True
    method: str = "lora"
    lora: LoraConfig = dataclasses.field(default_factory=lambda: LoraConfig(rank=16, alpha=32.0, dropout=0.05))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_ratio=0.0))
    data: PromptsConfig = dataclasses.field(default_factory=PromptsConfig)
    grader: str = "gsm8k"
    rewards: list[RewardSpec] = dataclasses.field(default_factory=step_entropy_rewards)
    num_generations: int = 8
    prompts_per_step: int = 2
    num_iterations: int = 1
    grad_accum: int = 1
    max_new_tokens: int = 512
    rollout_batch_size: int | None = None
    sampling: SamplingConfig = dataclasses.field(default_factory=lambda: SamplingConfig(temperature=0.6))
    engine: EngineConfig | None = None
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    loss_type: str = "grpo"
    scale_rewards: bool = True
    max_steps: int = 100
    seed: int = 0
    compute_dtype: str = "float32"
    param_dtype: str = "float32"
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=lambda: CheckpointConfig(every=20))
    log: LogConfig = dataclasses.field(default_factory=lambda: LogConfig(every=1))
    progress: bool = True
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)

    def __post_init__(self):
        check(bool(self.init_from), "init_from", "must name the model to start from (a student's folder)")
        check_choice(self, "method", ("lora", "full"))
        check_choice(self, "loss_type", LOSS_TYPES)
        check_choice(self, "compute_dtype", ("float32", "bfloat16"))
        check_choice(self, "param_dtype", ("float32", "bfloat16"))
        check_grader_name(self.grader)
        check_counts(self, "num_iterations", "grad_accum", "max_new_tokens", "max_steps", "prompts_per_step")
        check_range(self, "rollout_batch_size", 1, optional=True)
        check_range(self, "num_generations", 2)  # one completion has no group to be compared with
        # GRPO samples: greedy rows would all be one completion, with no group to compare
        check(self.sampling.temperature > 0, "sampling.temperature", f"must be > 0, got {self.sampling.temperature}")
        check_range(self, "epsilon", 0, 1, lo_open=True, hi_open=True)
        check_range(self, "epsilon_high", 0, lo_open=True, optional=True)
        check_range(self, "beta", 0)
        check(bool(self.rewards), "rewards", "must name at least one reward term")
        check(self.rows % self.grad_accum == 0, "grad_accum",
              f"must divide the batch of {self.rows} completions (prompts_per_step x num_generations)")

    @property
    def rows(self) -> int:
        """Completions per rollout batch."""
        return self.prompts_per_step * self.num_generations

    @property
    def resolved_export_dir(self) -> str:
        return self.export_dir or os.path.join(self.output_dir, "export")


# The GRPOConfig fields that do not change the policy's trained weights: where files go, how the run
# reports, checkpoints and exports, and how its processes meet. The one list of them: a resumed run
# may change them (`jaxcot.train.runtime.resume`), and `jaxcot run`'s fingerprint of a policy derives
# its list from this one (`jaxcot.run.stages`).
RESUMABLE_KEYS = ("output_dir", "progress", "export", "export_dir", "checkpoint", "log", "distributed")

__all__ = ["GRPOConfig", "PromptsConfig", "RESUMABLE_KEYS"]
