"""`jaxcot plan` compiles a run's programs for a TPU topology on this CPU host (libtpu's
compile-only path) and reports memory per device against HBM, FLOPs and hours."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBTPU = os.environ.get("JAXCOT_LIBTPU_PATH")


def _tiny_arch(folder) -> str:
    os.makedirs(folder, exist_ok=True)
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512, "hidden_size": 128,
           "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 32, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "eos_token_id": 2}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    return os.fspath(folder)


@pytest.mark.slow
@pytest.mark.skipif(not LIBTPU, reason="needs libtpu in JAXCOT_LIBTPU_PATH (make test installs it in .libtpu)")
def test_plan_compiles_for_a_tpu_topology(tmp_path):
    arch = _tiny_arch(tmp_path / "arch" / "tiny-llama")
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(f"name: tiny\nmodel: {tmp_path}/weights/tiny-llama\n"  # weights absent: arch/ by name
                       "data: {kind: benchmark, benchmark: gsm8k, n_train: 100, n_test: 20}\n"
                       "generate: {max_new_tokens: 64, batch_size: 8}\nscore: {layers: [1]}\n"
                       "methods: [{name: original, method: original}]\nstudent: {lora: {rank: 4}}\n")
    out = tmp_path / "plan.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([LIBTPU, ROOT]), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    # the train step asks for far more rows than a v5e chip's HBM holds; the other programs fit
    cmd = [sys.executable, "-m", "jaxcot", "plan", "--config", os.fspath(run_cfg), "--topology", "v5e:2x4",
           "--arch", arch, "--out", os.fspath(out), "train_rows=2048", "train_len=4096", "score_rows=8",
           "score_len=128", "prompt_len=32", "max_answer=16", "mesh=[2,4,1]"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    table = out.read_text()
    assert "on v5e:2x4 (8 chips, 8 devices; mesh data=2 x fsdp=4 x tensor=1; 16 GiB HBM per device)" in table
    for program in ("GoGI pass (layer 1)", "prefill", "decode loop"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {program} |"))
        assert "fits" in row and "does not fit" not in row, row
    row = next(line for line in table.splitlines() if line.startswith("| LoRA train step |"))
    assert "**does not fit**" in row and "GiB of temporaries" in row  # with XLA's figure, and what to change:
    assert "Its rows per device are 256: fewer rows per step" in table
    assert "LoRA SFT, 3 epochs: not timed" in table
    assert "GoGI over 100 traces: 0.00 h" in table and "evaluation, 20 questions x 64 tokens" in table
    assert "P('tensor', 'fsdp')" in table or "P('fsdp', 'tensor')" in table  # the weights are split over fsdp


def test_topology_chips():
    from jaxcot.run.plan import topology_chips

    assert (topology_chips("v5e:2x4"), topology_chips("v4:2x2x2"), topology_chips("v5p:4x4x4")) == (8, 8, 64)
    with pytest.raises(ValueError, match="a chip then ':' and a shape"):
        topology_chips("v5e")


def test_plan_config_checks_the_chip():
    from jaxcot.config import ConfigError
    from jaxcot.run.plan import PlanConfig

    with pytest.raises(ConfigError, match="a chip of"):
        PlanConfig(topology="h100:8")
    assert PlanConfig(topology="v4:2x2x2").chip == "v4"
