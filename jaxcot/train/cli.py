"""`jaxcot train --config configs/sft-lora-tiny.yaml [key=value ...]`."""

from __future__ import annotations

import argparse

from jaxcot.config import add_config_command


def register(subparsers) -> None:
    p = add_config_command(
        subparsers, "train",
        help="fine-tune (LoRA or full) or train from scratch on (prompt, completion) examples",
        description="SFT on a (data, fsdp, tensor) mesh with Orbax checkpoints; rerun to resume.",
        config_help="a TrainConfig YAML file (see configs/)", example="optim.lr=1e-4 data.path=x.jsonl")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxcot.config import load_config, print_config
    from jaxcot.runtime import Interrupted
    from jaxcot.train.config import TrainConfig
    from jaxcot.train.loop import train

    config = load_config(TrainConfig, args.config, args.overrides)
    if args.print_config:
        print_config(config)
        return 0
    result = train(config)
    print(
        f"{result.status} at step {result.step}/{result.total_steps}"
        + (f", loss {result.loss:.4f}" if result.loss is not None else "")
        + f"; checkpoints in {result.checkpoint_dir}"
        + (f"; model exported to {result.export_dir}" if result.export_dir else "")
    )
    if result.status == "preempted":  # SIGTERM: saved; a `train ... && next` chain must stop here
        raise Interrupted(f"stopped by SIGTERM at step {result.step} (checkpoint saved)")
    return 0
