"""`jaxcot rl --config configs/grpo-tiny.yaml [key=value ...]`."""

from __future__ import annotations

import argparse

from jaxcot.config import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "rl", config="GRPOConfig",
                    description="GRPO (group-normalised rewards, clipped ratio, optional KL to the start) with "
                    "Orbax checkpoints; rerun to resume.",
                    example="max_steps=50 data.path=questions.jsonl")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcot.rl.config import GRPOConfig
    from jaxcot.rl.loop import grpo
    from jaxcot.train.cli import fit_command

    def detail(result) -> str:
        last = result.history[-1] if result.history else None
        return f", reward {last['reward']:.3f}, {last['completion_tokens']:.0f} tokens" if last else ""

    return fit_command(args, GRPOConfig, grpo, "policy", detail)
