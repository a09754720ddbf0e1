"""The command line: every flag has help text, `python -m jaxcot` works, `--print-config` shows
every key, overrides may follow the options."""

import argparse
import os
import subprocess
import sys

from jaxcot.cli import build_parser, main, parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parsers(parser, path=("jaxcot",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_flag_has_help():
    missing = [f"{' '.join(path)} {a.option_strings or a.dest}" for path, p in _parsers(build_parser())
               for a in p._actions if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
               and not a.help]
    assert missing == []


def test_python_dash_m_jaxcot():
    out = subprocess.run([sys.executable, "-m", "jaxcot", "--help"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0 and "generate" in out.stdout and "run" in out.stdout


def test_print_config_shows_every_key(capsys):
    assert main(["run", "--config", os.path.join(ROOT, "configs", "demo.yaml"), "--print-config",
                 "student.max_steps=5"]) == 0
    shown = capsys.readouterr().out
    for key in ("runs_dir:", "latency_warm:", "auc_samples:", "n_max: 2", "max_steps: 5", "goal: value"):
        assert key in shown, key
    assert main(["train", "--config", os.path.join(ROOT, "configs", "sft-lora-tiny.yaml"), "--print-config"]) == 0
    assert "warmup_ratio:" in capsys.readouterr().out


def test_overrides_before_and_after_options():
    args = parse(["run", "a=1", "--config", "c.yaml", "--stages", "data", "b=2"])
    assert args.overrides == ["a=1", "b=2"] and args.stages == "data"
