"""Every script in benchmarks/ runs to its table at a tiny size, so none can rot unnoticed.

The SmolLM2-sized ones get a tiny random llama (2 layers, width 64) that carries SmolLM2's real
tokenizer and chat template in its GGUF file, so their tokenization, prompt and loading paths
are the ones the full-size runs take.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A 2-layer llama with SmolLM2-135M's vocabulary, tokenizer and chat template, as GGUF."""
    import torch
    import transformers as tf
    from gguf_ref import write_gguf

    from jaxcot.models import smollm2_gguf_path
    from jaxcot.models.gguf_file import read_gguf

    source = smollm2_gguf_path()
    meta = read_gguf(source).metadata
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(meta["tokenizer.ggml.tokens"]), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=meta["tokenizer.ggml.bos_token_id"],
                         eos_token_id=meta["tokenizer.ggml.eos_token_id"],
                         pad_token_id=meta["tokenizer.ggml.padding_token_id"])
    hf = tf.LlamaForCausalLM(cfg).float().eval()
    return write_gguf(hf, tmp_path_factory.mktemp("tiny") / "tiny-smollm2-vocab.gguf", tokenizer_from=source)


# script -> (tiny arguments, a line its output must contain)
TINY = {
    "accelerator.py": (["--tiny"], "| tiny | train |"),
    "commands.py": (["--n", "2", "--new", "4", "--steps", "1", "--repeats", "1", "--warmup", "0"], "speedup"),
    "compression_settings.py": (["--n", "2", "--offset", "0", "--batch-size", "2"], "arithmetic kept intact"),
    "decode_compression.py": (["--problems", "8", "--new", "40", "--budgets", "0.5"], "| plain (continuous"),
    "engine.py": (["--workloads", "testbed", "--prompts", "8", "--new", "16", "--slots", "4", "--repeats", "1"],
                  "continuous tok/s"),
    "forward.py": (["--batches", "1", "--seq", "16", "--repeats", "1", "--pause", "0"], "max |dlogit|"),
    "generate.py": (["--models", "tiny", "--batches", "2", "--new", "4", "--repeats", "1"], "batch-1 bound"),
    "graders.py": ([], "| grader |"),
    "importance.py": (["--models", "tiny", "--batch", "1", "--seq", "32", "--repeats", "1"], "tiny llama"),
    "rl.py": (["--prompts", "1", "--generations", "2", "--new", "8", "--steps", "1", "--warmup", "1"],
              "rollout tokens/s"),
    "train.py": (["--models", "2m", "--batch", "2", "--seq", "32", "--steps", "1", "--windows", "1",
                  "--warmup", "1", "--pause", "0"], "ratio"),
}
TAKES_GGUF = {"commands.py", "compression_settings.py", "forward.py"}
OWN_TEST = {"accelerator.py"}  # run by its own test below, which checks its JSON too
NOT_BENCHMARKS = {"tables.py"}  # writes the README's tables from the results (tests/test_benchmark_tables.py)
# script -> the results file(s) its tiny run writes (benchmarks/results.py)
RESULTS = {"commands.py": ["commands"], "compression_settings.py": ["compression_settings"],
           "decode_compression.py": ["decode-compression"], "engine.py": ["engine-testbed"], "forward.py": ["forward"],
           "generate.py": ["generate"], "graders.py": ["graders"], "importance.py": ["importance"], "rl.py": ["rl"],
           "train.py": ["train"]}


def scripts() -> list[str]:
    """The runnable scripts in benchmarks/ (modules they import have no __main__ block)."""
    names = []
    for name in sorted(os.listdir(BENCHMARKS)):
        if name.endswith(".py"):
            with open(os.path.join(BENCHMARKS, name)) as f:
                if 'if __name__ == "__main__":' in f.read():
                    names.append(name)
    return [n for n in names if n not in NOT_BENCHMARKS]


def test_every_benchmark_has_a_tiny_run():
    assert set(scripts()) == set(TINY), "add the new benchmark to TINY with arguments that make it small"


@pytest.mark.parametrize("script", sorted(set(TINY) - OWN_TEST))
def test_benchmark_runs_tiny(script, tiny_gguf, tmp_path):
    args, expect = TINY[script]
    if script in TAKES_GGUF:
        args = [*args, "--gguf", tiny_gguf]
    run_tiny(script, args, expect, tmp_path)
    check_results(tmp_path, RESULTS[script], script)


def check_results(tmp_path, names: list[str], script: str) -> list[dict]:
    """Each results file the run wrote (to $JAXCOT_BENCHMARK_RESULTS, never into the tree) names
    its commit, date, CPU, command and versions, and holds a non-empty table."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    docs = []
    for name in names:
        doc = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert doc["benchmark"] == name and doc["commit"] == (head or "unknown"), doc["commit"]
        for key in ("date", "cpu", "cores", "command", "results"):
            assert doc[key], key
        assert f"benchmarks/{script}" in doc["command"] and doc["versions"]["jax"] and doc["versions"]["python"]
        assert doc["tables"] and all(t["rows"] and all(len(r) == len(t["header"]) for r in t["rows"])
                                     for t in doc["tables"].values()), doc["tables"]
        docs.append(doc)
    return docs


def test_testbed_benchmarks_take_another_teacher(tmp_path):
    """`--teacher` (e.g. the overthinking teacher's export): its problems, its results file."""
    from jaxcot.testbed.teacher import teacher_path

    folder = tmp_path / "teacher-copy" / "model"
    shutil.copytree(teacher_path(), folder)
    run_tiny("decode_compression.py", [*TINY["decode_compression.py"][0], "--teacher", str(folder)],
             "| decoding (testbed-copy, no training)", tmp_path)
    out = run_tiny("engine.py", [*TINY["engine.py"][0], "--teacher", str(folder), "--mix", "0.5:1-2", "0.5:3-4"],
                   "| testbed-copy |", tmp_path)
    assert "8 problems (4 of 1-2 steps, 4 of 3-4 steps)" in out
    check_results(tmp_path, ["decode-compression-copy"], "decode_compression.py")
    check_results(tmp_path, ["engine-testbed-copy"], "engine.py")
    assert not (tmp_path / "results" / "decode-compression.json").exists()
    with pytest.raises(AssertionError, match="shares sum to 0.8"):
        run_tiny("engine.py", [*TINY["engine.py"][0], "--mix", "0.5:1-2", "0.3:3-4"], "", tmp_path)
    (folder / "teacher.json").unlink()
    with pytest.raises(AssertionError, match="no teacher.json"):
        run_tiny("engine.py", [*TINY["engine.py"][0], "--teacher", str(folder)], "", tmp_path)


def test_generate_benchmark_runs_int8_tiny(tmp_path):
    """The int8 weight-only comparison (torchao on the transformers side)."""
    out = run_tiny("generate.py", [*TINY["generate.py"][0], "--dtype", "int8"], "(int8)", tmp_path)
    assert "torchao is not installed" not in out


def test_accelerator_benchmark_writes_its_results(tmp_path):
    """`accelerator.py --tiny`: jaxcot and torch on CPU through the code the GPU run takes (one
    device argument apart); the JSON names the run and holds, per framework and task, a measured
    row: positive tokens/s, a positive HBM fraction (decode), MFU in (0, 1] from XLA's FLOP count."""
    out = tmp_path / "acc.json"
    args, expect = TINY["accelerator.py"]
    run_tiny("accelerator.py", [*args, "--out", str(out)], expect, tmp_path)
    result = json.loads(out.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert result["commit"] == (head or "unknown")
    for key in ("date", "device_kind", "cpu", "jax", "torch", "transformers"):
        assert result[key], key
    assert "--tiny" in result["command"] and result["peaks"]["flops"] > 0 and result["peaks"]["bandwidth"] > 0
    assert check_results(tmp_path, ["accelerator-tiny"], "accelerator.py")[0]["results"]["rows"] == result["rows"]
    rows = result["rows"]
    assert {(r["framework"], r["task"]) for r in rows} == {(f, t) for f in ("jaxcot", "torch")
                                                          for t in ("decode", "gogi", "train")}
    assert sorted(r["batch"] for r in rows if r["task"] == "decode") == [1, 1, 4, 4]
    for r in rows:
        assert r["status"] == "ok" and r["tokens_per_s"] > 0, r
        if r["task"] == "decode":
            assert r["hbm_fraction"] > 0, r
        else:
            assert r["flops_source"] == "xla" and 0 < r["mfu"] <= 1, r


def run_tiny(script: str, args: list[str], expect: str, tmp_path) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT, JAXCOT_CACHE_DIR=str(tmp_path / "cache"),
               JAXCOT_BENCHMARK_RESULTS=str(tmp_path / "results"))
    env.pop("XLA_FLAGS", None)  # one device, as a user runs them
    proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert expect in proc.stdout, proc.stdout[-2000:]
    return proc.stdout
