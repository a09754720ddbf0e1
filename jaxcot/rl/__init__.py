"""GRPO after any student: rollouts from the compiled sampler, rewards as plain functions,
group-normalised advantages, the clipped objective with an optional KL to the starting model."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("GRPOConfig", "PromptsConfig"),
    "loop": ("GRPOResult", "grpo"),
    "loss": ("LossSettings", "aggregate", "group_advantages", "grpo_loss", "per_token_objective", "token_logprobs"),
    "rewards": ("REWARDS", "RewardSpec", "score_rewards", "step_entropy_rewards"),
})
