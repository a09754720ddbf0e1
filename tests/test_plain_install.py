"""A plain `pip install jaxcot` (no extras, so no torch) runs the commands on real weights and data:
`make test` builds that environment and points JAXCOT_PLAIN_PYTHON at it."""

import json
import os
import subprocess

import pytest

PLAIN = os.environ.get("JAXCOT_PLAIN_PYTHON")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAIN, reason="needs the plain environment `make test` builds (JAXCOT_PLAIN_PYTHON)"),
]


def plain(args, tmp_path, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", JAXCOT_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([PLAIN, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_torch_is_absent_and_jaxcot_is_this_checkout(tmp_path):
    out = plain(["-c", "import importlib.util, jaxcot; print(importlib.util.find_spec('torch')); "
                       "print(jaxcot.__file__)"], tmp_path)
    spec, where = out.split()
    assert spec == "None"
    assert where.startswith(os.path.join(ROOT, "jaxcot"))


def test_generate_score_compress_on_smollm2_and_gsm8k(tmp_path):
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
           "units=expression"], tmp_path)
    scored = [json.loads(line) for line in open(tmp_path / "scored.jsonl")]
    assert len(scored) == 2 and all(len(r["scores"]["gogi"]) == len(r["scores"]["pieces"]) > 20 for r in scored)
    examples = [json.loads(line) for line in open(tmp_path / "set.jsonl")]
    assert len(examples) == 2 and all(0 < e["kept"] < e["total"] for e in examples)
    assert (tmp_path / "set.summary.json").exists()
