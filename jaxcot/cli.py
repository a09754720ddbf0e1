"""`jaxcot` command line: one subcommand per pipeline stage.

Each stage module exposes `register(subparsers)`, adding its parser with `set_defaults(func=...)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that registers it. Keep one line per command.
COMMANDS = {
    "generate": "jaxcot.generate.cli",
    "score": "jaxcot.importance.cli",
    "compress": "jaxcot.compress.cli",
    "train": "jaxcot.train.cli",
    "testbed": "jaxcot.testbed.cli",
    "run": "jaxcot.run.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcot", description="Shorter chains of thought, in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    registered = set()
    for module in dict.fromkeys(COMMANDS.values()):
        if module not in registered:
            importlib.import_module(module).register(sub)
            registered.add(module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jaxcot.runtime import tune_host_allocator

    tune_host_allocator()  # before any JAX work: see jaxcot/runtime.py
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
