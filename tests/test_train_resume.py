"""Interrupt and resume: a stopped run (deterministic hook) and a SIGTERM-killed CLI run, both
resumed, end with the same parameters as an uninterrupted run (LoRA with dropout, packing,
gradient accumulation: data order, optimizer state and dropout keys all have to line up)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from flax import nnx
from train_helpers import flat, max_diff, tiny_config

from jaxcot.config import to_dict
from jaxcot.programs import ProgramCache
from jaxcot.train import train
from jaxcot.train.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 60


def resume_config(tmp_path, name):
    return tiny_config(
        tmp_path, name, n_examples=24, method="lora", epochs=20, max_steps=STEPS, batch_size=4, grad_accum=2,
        lora=dict(rank=4, alpha=8.0, dropout=0.1), data=dict(packing=True), optim=dict(lr=3e-3, warmup_steps=5),
        checkpoint=dict(every=25, keep=2),
    )


def trained(res) -> dict:
    return flat(nnx.state(res.model, nnx.Param).to_pure_dict())


@pytest.fixture(scope="module")
def compiled():
    """Compiled init/step functions shared by this module's runs (identical programs)."""
    return ProgramCache()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compiled):
    tmp = tmp_path_factory.mktemp("resume")
    res = train(resume_config(tmp, "straight"), cache=compiled)
    assert res.status == "finished" and res.step == STEPS
    return tmp, trained(res)


def test_sigterm_then_stop_then_resume_equals_uninterrupted(reference, compiled):
    """A CLI run killed by a real SIGTERM saves and exits 143 (so `train && next` stops); resumed
    in-process it stops at a deterministic step (the stop_after hook), and resumed again it finishes
    equal to `reference`."""
    tmp, want = reference
    cfg = resume_config(tmp, "killed")
    cfg_path = tmp / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False))
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxcot.cli", "train", "--config", str(cfg_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    log = os.path.join(cfg.output_dir, "metrics.jsonl")
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(log) and sum(1 for _ in open(log)) >= 3:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert "preempted at step" in out and "rerun the same command to resume" in out, out
    killed_at = int(out.split("preempted at step ")[1].split("/")[0])
    assert 3 <= killed_at < STEPS - 10, out
    ck = Checkpointer(os.path.join(cfg.output_dir, "checkpoints"), keep=2)
    assert ck.latest_step() == killed_at
    ck.close()

    stop = killed_at + 7
    mid = train(cfg, stop_after=stop, cache=compiled)
    assert mid.status == "stopped" and mid.step == stop
    end = train(cfg, cache=compiled)
    assert end.status == "finished" and end.step == STEPS
    assert max_diff(trained(end), want) <= 1e-6
    steps = [json.loads(line)["step"] for line in open(log)]
    assert steps == list(range(1, STEPS + 1))


def test_resume_refuses_a_changed_config(reference, compiled):
    tmp, _ = reference
    changed = resume_config(tmp, "straight")  # the reference run's folder, checkpoint at its end
    changed.optim.lr = 1e-3
    with pytest.raises(ValueError, match=r"differs in optim;"):
        train(changed, cache=compiled)
