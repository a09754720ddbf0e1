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

# subcommand -> (module that registers it, one line for `jaxcot --help`). Only the module of the
# command being run is imported, so `jaxcot --help` and `jaxcot CMD --help` start no jax.
COMMANDS = {
    "generate": ("jaxcot.generate.cli", "generate completions (one --prompt, or a --data set to --out traces.jsonl)"),
    "score": ("jaxcot.importance.cli", "score chain tokens (GoGI, entropy, self-information) of a traces JSONL"),
    "compress": ("jaxcot.compress.cli", "compress scored chains into an SFT training set"),
    "train": ("jaxcot.train.cli", "fine-tune (LoRA or full) or train from scratch on (prompt, completion) examples"),
    "rl": ("jaxcot.rl.cli", "GRPO after a student: sample, reward, and update the policy (LoRA or full)"),
    "eval": ("jaxcot.eval.cli", "evaluate one model or student on a benchmark: accuracy, chain tokens, latency"),
    "leaderboard": ("jaxcot.eval.leaderboard_cli", "every importance scorer at every layer against a benchmark's "
                    "reference chains, their arithmetic tokens as the truth"),
    "testbed": ("jaxcot.testbed.cli", "the arithmetic testbed: traces with ground-truth roles, tokenizer, teacher, "
                "the importance leaderboard"),
    "run": ("jaxcot.run.cli", "the whole pipeline: generate, score, compress, train students, evaluate, report"),
    "plan": ("jaxcot.run.plan_cli", "compile a run's programs for a TPU topology: memory per device and hours"),
    "report": ("jaxcot.eval.report_cli", "rebuild a run folder's report.html (the page of its results)"),
    "view": ("jaxcot.eval.view_cli", "serve a run folder's report.html on localhost and print its address"),
}
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + 15  # as a shell reports a process ended by SIGTERM


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxcot")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors (a flag's value of the wrong type, a missing argument) are one
    line like every other error, not the usage block first; `--help` shows the usage."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (--help shows the usage)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; `command`'s own parser is built in full (its module imported), the others'
    only named, for the list `jaxcot --help` shows. (Subcommands' parsers are `_Parser`s too.)"""
    parser = _Parser(prog="jaxcot", description="Shorter chains of thought, in JAX.")
    parser.add_argument("--version", action="version", version=f"jaxcot {version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or JAXCOT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).register(sub)  # (`jaxcot --help` builds no command's parser)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _unknown(parser: argparse.ArgumentParser, command: str | None, rest: list[str]):
    """The error for arguments no parser took, with the nearest flag of the command."""
    from jaxcot.config import did_you_mean

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    known = [o for a in sub.choices[command]._actions for o in a.option_strings] if command in sub.choices else []
    flag = next((r.split("=")[0] for r in rest if r.startswith("--")), None)
    hint = f"; {did_you_mean(flag, known)}" if flag and known else ""
    parser.error(f"unrecognized arguments: {' '.join(rest)}{hint}")


def _inputs_optional(parser: argparse.ArgumentParser) -> None:
    """No argument is required: `--print-config` prints the settings without the run's inputs."""
    for group in parser._mutually_exclusive_groups:  # noqa: SLF001
        group.required = False
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _inputs_optional(sub)
        elif action.option_strings:
            action.required = False


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv`; `key=value` overrides may come before or after a command's options."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv)]
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    command = _command(argv)
    parser = build_parser(command if command in COMMANDS else None)
    if "--print-config" in argv:
        _inputs_optional(parser)
    args, rest = parser.parse_known_args(argv)
    if rest:
        if hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
            args.overrides = list(args.overrides) + rest
        else:
            _unknown(parser, command, rest)
    args.debug = debug or os.environ.get("JAXCOT_DEBUG", "") not in ("", "0")
    return args


def _user_errors() -> tuple[type[BaseException], ...]:
    from jaxcot.config import ConfigError
    from jaxcot.io import DataError, LockError
    from jaxcot.run.runner import StageInputMissing
    from jaxcot.train.runtime import TrainingDiverged  # (SFT and GRPO raise it)

    return (ConfigError, DataError, LockError, StageInputMissing, TrainingDiverged, FileNotFoundError,
            IsADirectoryError, NotADirectoryError, PermissionError, ValueError)


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

    tune_host_allocator()  # before any JAX work (and its threads): see jaxcot/runtime.py
    args = parse(argv)  # imports only the command's module: `--help` and `--version` start no jax
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
    except OSError as e:
        from jaxcot.io import WRITE_ERRNOS

        if args.debug or e.errno not in WRITE_ERRNOS:
            raise
        print(f"jaxcot {args.command}: error: cannot write {e.filename or 'the output'}: {e.strerror}; "
              "free some space (or write elsewhere) and rerun: finished outputs are kept, and the command "
              "resumes (--debug shows the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
