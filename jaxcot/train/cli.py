"""`jaxcot train --config configs/sft-lora-tiny.yaml [key=value ...]`."""

from __future__ import annotations

import argparse
from typing import Callable

from jaxcot.config import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "train", config="TrainConfig",
                    description="SFT on a (data, fsdp, tensor) mesh with Orbax checkpoints; rerun to resume.",
                    example="optim.lr=1e-4 data.path=x.jsonl")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcot.train.config import TrainConfig
    from jaxcot.train.loop import train

    return fit_command(args, TrainConfig, train, "model",
                       lambda r: f", loss {r.loss:.4f}" if r.loss is not None else "")


def fit_command(args: argparse.Namespace, config_class, fit: Callable, what: str, detail: Callable) -> int:
    """A training command (SFT, GRPO): its config from the flags, `fit(config)`, then where it
    stopped, with `detail(result)` (its last metrics). A run stopped by SIGTERM raises
    `Interrupted` (saved; a `train ... && next` chain must stop there)."""
    from jaxcot.config import command_config
    from jaxcot.runtime import Interrupted

    config = command_config(config_class, args)
    if config is None:
        return 0
    result = fit(config)
    print(f"{result.status} at step {result.step}/{result.total_steps}{detail(result)}; checkpoints in "
          f"{result.checkpoint_dir}" + (f"; {what} exported to {result.export_dir}" if result.export_dir else ""))
    if result.status == "preempted":
        raise Interrupted(f"stopped by SIGTERM at step {result.step} (checkpoint saved)")
    return 0
