"""GRPO after any student: rollouts from the compiled sampler, rewards as plain functions,
group-normalised advantages, the clipped objective with an optional KL to the starting model."""

from jaxcot.rl.config import GRPOConfig, PromptsConfig
from jaxcot.rl.loop import GRPOResult, grpo
from jaxcot.rl.loss import LossSettings, aggregate, group_advantages, grpo_loss, per_token_objective, token_logprobs
from jaxcot.rl.rewards import BUILT_IN, RewardSpec, score_rewards, step_entropy_rewards

__all__ = [
    "BUILT_IN", "GRPOConfig", "GRPOResult", "LossSettings", "PromptsConfig", "RewardSpec", "aggregate",
    "group_advantages", "grpo", "grpo_loss", "per_token_objective", "score_rewards", "step_entropy_rewards",
    "token_logprobs",
]
