"""`jaxcot plan` compiles a run's programs for a TPU topology on this CPU host (libtpu's
compile-only path) and reports memory per device against HBM, FLOPs and hours."""

from __future__ import annotations

import dataclasses
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
    # libtpu only in its private folder (JAXCOT_LIBTPU_PATH): `jaxcot plan` puts it on its own path
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="", JAXCOT_LIBTPU_PATH=LIBTPU)
    # the train step asks for far more rows than a v5e chip's HBM holds; the other programs fit
    cmd = [sys.executable, "-m", "jaxcot", "plan", "--config", os.fspath(run_cfg), "--topology", "v5e:2x4",
           "--arch", arch, "--out", os.fspath(out), "--fit", "train_rows=2048", "train_len=4096", "score_rows=8",
           "score_len=128", "prompt_len=32", "max_answer=16", "mesh=[2,4,1]"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    table = out.read_text()
    assert "on v5e:2x4 (8 chips, 8 devices; mesh data=2 x fsdp=4 x tensor=1; 16 GiB HBM per device)" in table
    # the job as configured: the run's dtypes (float32 by default), each setting with its source
    assert "mesh=[2, 4, 1] (override)" in table and "generate_dtype=float32 (config generate.dtype)" in table
    assert "score_dtype=float32 (config score.dtype)" in table and "param_dtype=float32 (config TrainConfig" in table
    assert "infer_mesh=[-1, 1, 1] (config jaxcot run" in table and "score_mesh=[-1, 1, 1] (config score.mesh)" in table
    for program in ("GoGI pass (layer 1)", "prefill", "decode loop"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {program} |"))
        assert "fits" in row and "does not fit" not in row, row
    row = next(line for line in table.splitlines() if line.startswith("| LoRA train step |"))
    assert "**does not fit**" in row and "GiB of temporaries" in row  # with XLA's figure, and what to change:
    assert "Its rows per device are 256: fewer rows per step" in table
    assert "--fit: LoRA train step fits with `" in table  # the cheapest change that fits, found by compiling
    assert "LoRA SFT, 3 epochs: not timed" in table
    assert "GoGI over 100 traces: 0.00 h" in table and "evaluation, 20 questions x 64 tokens" in table
    assert "chains for 100 questions x 64 tokens: 0.00 h" in table
    assert "P('tensor', 'fsdp')" in table or "P('fsdp', 'tensor')" in table  # the weights are split over fsdp


def test_libtpu_stays_out_of_the_environment(tmp_path, monkeypatch):
    """The pin comes from jax's own tpu extra; the folder is private (env or cache, named by the pin);
    this environment has no libtpu, and `ensure_libtpu` puts an installed folder on sys.path only."""
    import importlib.metadata
    import importlib.util

    from jaxcot.run.libtpu import ensure_libtpu, libtpu_folder, pinned_libtpu

    assert importlib.util.find_spec("libtpu") is None  # what `pip install jaxcot[plan]` used to break
    pin = pinned_libtpu()
    assert pin.startswith("libtpu==") and any(r.startswith(pin) for r in importlib.metadata.requires("jax"))
    monkeypatch.delenv("JAXCOT_LIBTPU_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", os.fspath(tmp_path / "cache"))
    version = pin.split("==")[1].rstrip(".*")
    assert libtpu_folder() == os.fspath(tmp_path / "cache" / "jaxcot" / f"libtpu-{version}")
    folder = tmp_path / "private"
    (folder / "libtpu").mkdir(parents=True)
    (folder / "libtpu" / "__init__.py").write_text("")
    monkeypatch.setenv("JAXCOT_LIBTPU_PATH", os.fspath(folder))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert ensure_libtpu() == os.fspath(folder) and sys.path[0] == os.fspath(folder)
    assert importlib.util.find_spec("libtpu").origin == os.fspath(folder / "libtpu" / "__init__.py")


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


def test_plan_config_comes_from_the_run_config():
    """The plan compiles the job as configured: dtypes, mesh, remat and shapes from the run config
    (each with where it came from), overrides winning."""
    from jaxcot.config import load_config
    from jaxcot.run.config import RunConfig
    from jaxcot.run.plan import PlanConfig, resolve, settings
    from jaxcot.run.plan_cli import plan_config

    run_cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "gemma3-4b-math.yaml"), [])
    cfg, sources = plan_config(run_cfg, "v5e:2x4", ["score_dtype=bfloat16", "mesh=[2,4,1]"])
    tc = run_cfg.student_config("x", "x", "y")
    assert (cfg.generate_dtype, cfg.param_dtype, cfg.compute_dtype) == (
        run_cfg.generate.dtype, tc.param_dtype, tc.compute_dtype)
    assert (cfg.score_dtype, cfg.mesh, cfg.remat) == ("bfloat16", (2, 4, 1), tc.remat)
    assert (cfg.train_rows, cfg.train_len, cfg.score_rows) == (tc.batch_size // tc.grad_accum, tc.data.max_len,
                                                               run_cfg.score.batch_size)
    assert sources["generate_dtype"] == "config generate.dtype" and sources["score_dtype"] == "override"
    assert sources["mesh"] == "override" and sources["param_dtype"].startswith("config ")
    header = settings(cfg, sources)
    assert f"generate_dtype={run_cfg.generate.dtype} (config generate.dtype)" in header
    assert "mesh=[2, 4, 1] (override)" in header
    bare, src = resolve(PlanConfig(topology="v4:2x2x2"))  # no run config: the plan's defaults, said so
    assert bare.mesh == (-1, 1, 1) and bare.param_dtype == "bfloat16" and src["param_dtype"] == "plan default"


def test_fit_candidates_cheapest_first():
    """--fit tries remat, then fewer rows per device, then the weights over wider fsdp, then tensor."""
    from jaxcot.run.plan import PlanConfig, fit_candidates, resolve

    cfg, _ = resolve(PlanConfig(topology="v5e:2x4", train_rows=32, score_rows=16))
    train = [o for o, _ in fit_candidates(cfg, "train", 8)]
    assert train == ["remat=true", "train_rows=16", "train_rows=8", "mesh=[4,2,1]", "mesh=[2,4,1]", "mesh=[1,8,1]",
                     "mesh=[4,1,2]", "mesh=[2,1,4]", "mesh=[1,1,8]", "train_len=1024"]
    # every device on fsdp already (the shipped 7B config): fsdp traded for tensor, then shorter rows
    full = dataclasses.replace(cfg, mesh=(1, 8, 1), remat=True, train_rows=8)
    assert [o for o, _ in fit_candidates(full, "train", 8)] == ["mesh=[1,4,2]", "mesh=[1,2,4]", "mesh=[1,1,8]",
                                                                "train_len=1024"]
    assert all(f["remat"] for _, f in fit_candidates(cfg, "train", 8))  # later candidates keep remat on
    gogi = fit_candidates(cfg, "gogi", 8)
    assert gogi[:2] == [("score_remat=true", {"score_remat": True}), ("score_rows=8", {"score_remat": True,
                                                                                     "score_rows": 8})]
    assert ("score_mesh=[1,8,1]", {"score_remat": True, "score_mesh": (1, 8, 1)}) in gogi
    assert fit_candidates(cfg, "generation", 8)[0] == ("decode_rows=32", {"decode_rows": 32})


# Published parameter counts (the model cards): the architecture configs the plan compiles are theirs.
ARCH_PARAMS = {"Qwen2.5-7B-Instruct": 7.62e9, "gemma-3-4b-it": 3.88e9, "Qwen2.5-32B-Instruct": 32.76e9,
               "DeepSeek-R1-Distill-Qwen-32B": 32.76e9}


@pytest.mark.parametrize("name", sorted(ARCH_PARAMS))
def test_arch_configs_have_the_published_size(name):
    import math

    import jax
    from flax import nnx

    from jaxcot.models.config import ModelConfig
    from jaxcot.models.decoder import Decoder

    assert sorted(os.listdir(os.path.join(ROOT, "configs", "arch"))) == sorted(ARCH_PARAMS)
    cfg = ModelConfig.from_hf(os.path.join(ROOT, "configs", "arch", name))
    state = nnx.state(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(state))
    assert abs(n / ARCH_PARAMS[name] - 1) < 0.005, n


FSDP_MEMORY = r"""
import json, sys
from jaxcot.models.config import ModelConfig
from jaxcot.run import plan
from jaxcot.run.libtpu import ensure_libtpu

ensure_libtpu()
model_cfg = ModelConfig(family="llama", vocab_size=65536, hidden_size=128, intermediate_size=256, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=32, tie_word_embeddings=True)
out = {}
for fsdp in (1, 4):
    cfg = plan.PlanConfig(topology="v5e:2x4", mesh=(8 // fsdp, fsdp, 1), score_mesh=(8 // fsdp, fsdp, 1),
                          infer_mesh=(8, 1, 1), remat=True, score_remat=True, generate_dtype="bfloat16",
                          score_dtype="bfloat16", param_dtype="bfloat16", compute_dtype="bfloat16", train_rows=8,
                          train_len=2048, score_rows=8, score_len=2048, max_answer=16)
    meshes = plan.meshes(cfg, plan.topology_slice(cfg).devices)
    programs = plan.compile_programs(model_cfg, cfg, meshes, lambda flops: 0.0, 819.0, say=lambda _: None,
                                     only=("train", "gogi"))
    out[fsdp] = {p.name.split(" (")[0]: [p.argument_bytes, p.temp_bytes, p.error] for p in programs}
print(json.dumps(out))
"""


@pytest.mark.skipif(not LIBTPU, reason="needs libtpu in JAXCOT_LIBTPU_PATH (make test installs it in .libtpu)")
def test_fsdp_shrinks_arguments_and_not_temporaries():
    """The train step and GoGI pass compiled for v5e:2x4 (XLA's memory analysis for the TPU): with
    the weights over fsdp 4 instead of whole on every device, the arguments per device fall and the
    temporaries do not rise. A tied 64k-row vocabulary: while the table's width was split over
    fsdp, the lookup and the LM head gathered the whole table on every device (docs/plan.md)."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="", JAXCOT_LIBTPU_PATH=LIBTPU)
    res = subprocess.run([sys.executable, "-c", FSDP_MEMORY], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    memory = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(memory["4"]) == {"LoRA train step", "GoGI pass"}
    for name, (args, temp, error) in memory["4"].items():
        args1, temp1, _ = memory["1"][name]
        assert error is None and args < 0.5 * args1, (name, memory)
        assert temp <= temp1, (name, memory)


def test_plan_config_takes_the_engine_from_the_run_config():
    """A run that decodes with the continuous engine is planned as it: its slots, queue and eviction
    from generate.engine (each with its source), overrides winning; --fit then halves the slots.
    Without `continuous` the plan keeps the static loop."""
    from jaxcot.config import load_config
    from jaxcot.run.config import RunConfig
    from jaxcot.run.plan import fit_candidates, resolve, settings
    from jaxcot.run.plan_cli import plan_config

    path = os.path.join(ROOT, "configs", "gemma3-4b-math.yaml")
    static, _ = plan_config(load_config(RunConfig, path, []), "v5e:2x4", [])
    assert not static.engine_slots and "engine_slots" not in " ".join(settings(*resolve(static)))
    run_cfg = load_config(RunConfig, path, ["generate.engine.continuous=true", "generate.engine.slots=32",
                                            "generate.engine.eviction.budget=96", "generate.engine.eviction.window=8"])
    cfg, sources = plan_config(run_cfg, "v5e:2x4", ["engine_queue=64"])
    assert (cfg.engine_slots, cfg.engine_queue, cfg.engine_budget, cfg.engine_window) == (32, 64, 96, 8)
    assert sources["engine_slots"] == "config generate.engine.slots" and sources["engine_queue"] == "override"
    assert sources["engine_budget"] == "config generate.engine.eviction.budget"
    resolved, src = resolve(cfg, sources)
    assert "engine_slots=32 (config generate.engine.slots)" in settings(resolved, src)
    assert fit_candidates(resolved, "generation", 8)[0] == ("engine_slots=16", {"engine_slots": 16})


ENGINE_PLAN = r"""
import json, math
from jaxcot.models.config import ModelConfig
from jaxcot.run import plan
from jaxcot.run.libtpu import ensure_libtpu

ensure_libtpu()
model_cfg = ModelConfig(family="llama", vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=32, tie_word_embeddings=False, eos_token_id=2)
out = {}
for slots in (None, 4, 16):
    cfg = plan.PlanConfig(topology="v5e:2x2", engine_slots=slots, engine_queue=32, train_rows=8, train_len=64,
                          score_rows=8, score_len=64, max_answer=16, prompt_len=32, new_tokens=64, decode_rows=8,
                          traces=100, eval_questions=20)
    p = plan.plan(model_cfg, cfg, model_name="tiny", say=lambda _: None)
    out[str(slots)] = {"programs": [[q.name, q.shapes, q.argument_bytes, q.temp_bytes, q.error, q.seconds]
                                    for q in p.programs], "hours": p.hours, "table": plan.format_plan(p, cfg)}
print(json.dumps(out))
"""


@pytest.mark.skipif(not LIBTPU, reason="needs libtpu in JAXCOT_LIBTPU_PATH (make test installs it in .libtpu)")
def test_plan_compiles_the_decode_engine_when_the_run_uses_it():
    """With engine_slots set, generation is planned as the continuous engine's one program, compiled
    for v5e:2x2 (XLA's memory analysis: it grows with the slots) and timed by its steps (more slots,
    fewer steps per queue); the static prefill and decode loop are then absent. Off: as before."""
    import math

    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="", JAXCOT_LIBTPU_PATH=LIBTPU)
    res = subprocess.run([sys.executable, "-c", ENGINE_PLAN], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    names = lambda key: [p[0] for p in got[key]["programs"]]  # noqa: E731
    assert names("None") == ["LoRA train step", "GoGI pass (layer 1)", "prefill", "decode loop"]
    assert "decode engine" not in got["None"]["table"]
    engine = {}
    for slots in ("4", "16"):
        assert names(slots) == ["LoRA train step", "GoGI pass (layer 1)", "decode engine"]
        _, shapes, args, temp, error, seconds = got[slots]["programs"][2]
        assert error is None and args > 0 and temp > 0 and seconds > 0, got[slots]
        assert shapes == f"{slots} slots, queue 32 x 32 + 64 tokens"
        assert f"| decode engine | {shapes} |" in got[slots]["table"] and "| prefill |" not in got[slots]["table"]
        hours = got[slots]["hours"]
        assert all(math.isfinite(h) and h > 0 for h in hours.values()), hours
        # 100 chains in queues of 32: 4 engine calls
        assert hours["chains for 100 questions x 64 tokens"] == pytest.approx(4 * seconds / 3600)
        engine[slots] = (args + temp, hours["chains for 100 questions x 64 tokens"])
    assert engine["16"][0] > engine["4"][0], engine  # 16 slots' caches and state, from XLA
    assert engine["16"][1] < engine["4"][1], engine  # 2 x 64 steps a queue instead of 8 x 64
