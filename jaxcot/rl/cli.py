"""`jaxcot rl --config configs/grpo-tiny.yaml [key=value ...]`."""

from __future__ import annotations

import argparse

from jaxcot.config import add_config_command


def register(subparsers) -> None:
    p = add_config_command(
        subparsers, "rl",
        help="GRPO after a student: sample, reward, and update the policy (LoRA or full)",
        description="GRPO (group-normalised rewards, clipped ratio, optional KL to the start) with Orbax "
                    "checkpoints; rerun to resume.",
        config_help="a GRPOConfig YAML file (see configs/grpo-*.yaml)",
        example="max_steps=50 data.path=questions.jsonl")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcot.config import load_config, print_config
    from jaxcot.rl.config import GRPOConfig
    from jaxcot.rl.loop import grpo
    from jaxcot.runtime import Interrupted

    config = load_config(GRPOConfig, args.config, args.overrides)
    if args.print_config:
        print_config(config)
        return 0
    result = grpo(config)
    last = result.history[-1] if result.history else None
    print(f"{result.status} at step {result.step}/{result.total_steps}"
          + (f", reward {last['reward']:.3f}, {last['completion_tokens']:.0f} tokens" if last else "")
          + f"; checkpoints in {result.checkpoint_dir}"
          + (f"; policy exported to {result.export_dir}" if result.export_dir else ""))
    if result.status == "preempted":
        raise Interrupted(f"stopped by SIGTERM at step {result.step} (checkpoint saved)")
    return 0
