"""`jaxcot` command line: one subcommand per pipeline stage.

Each stage module exposes `register(subparsers)`, adding its parser with `set_defaults(func=...)`.
A user error (a bad config key or value, a missing or malformed file, an output another process
is writing or that other settings made) prints one line naming the file, line or key and exits 2;
`--debug` (or `JAXCOT_DEBUG=1`) shows the traceback instead. SIGTERM stops a command with what it
finished saved, and exit status 143.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

# subcommand -> module that registers it. Keep one line per command.
COMMANDS = {
    "generate": "jaxcot.generate.cli",
    "score": "jaxcot.importance.cli",
    "compress": "jaxcot.compress.cli",
    "train": "jaxcot.train.cli",
    "rl": "jaxcot.rl.cli",
    "testbed": "jaxcot.testbed.cli",
    "run": "jaxcot.run.cli",
    "plan": "jaxcot.run.plan_cli",
}
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + 15  # as a shell reports a process ended by SIGTERM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcot", description="Shorter chains of thought, in JAX.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or JAXCOT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(module).register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from jaxcot.config import ConfigError
    from jaxcot.io import DataError, LockError
    from jaxcot.run.runner import StageInputMissing
    from jaxcot.train.loop import TrainingDiverged  # (GRPO raises it too)

    return (ConfigError, DataError, LockError, StageInputMissing, TrainingDiverged, FileNotFoundError,
            IsADirectoryError, NotADirectoryError, PermissionError, ValueError)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; `key=value` overrides may come before or after a command's options."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args, rest = parser.parse_known_args([a for a in argv if a != "--debug"])
    if rest:
        if hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
            args.overrides = list(args.overrides) + rest
        else:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.debug = debug or os.environ.get("JAXCOT_DEBUG", "") not in ("", "0")
    return args


@contextlib.contextmanager
def _remote_out(args):
    """A command's `--out` file on remote storage (gs://...) is written in a local copy and
    pushed back when the command ends (`jaxcot.storage.local_file`)."""
    from jaxcot.storage import is_remote, local_file

    out = getattr(args, "out", None)
    if not isinstance(out, str) or not is_remote(out):
        yield
        return
    with local_file(out) as args.out:
        yield


def main(argv: list[str] | None = None) -> int:
    from jaxcot.logs import setup_logging
    from jaxcot.runtime import (
        Interrupted,
        count_compilations,
        enable_compilation_cache,
        sigterm_raises,
        tune_host_allocator,
    )

    tune_host_allocator()  # before any JAX work: see jaxcot/runtime.py
    args = parse(argv)
    setup_logging()  # the command owns its output: jaxcot's lines on stderr, whatever a library set up
    enable_compilation_cache()
    try:
        with sigterm_raises(), count_compilations() as compiled, _remote_out(args):
            code = int(args.func(args) or 0)
        if compiled.programs:
            print(f"jaxcot {args.command}: {compiled.summary()}", file=sys.stderr)
        return code
    except Interrupted as e:
        print(f"jaxcot {args.command}: {e}; what was finished is saved: rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"\njaxcot {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if args.debug:
            raise
        print(f"jaxcot {args.command}: error: {e} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
