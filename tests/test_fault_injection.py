"""Kill a tiny `jaxcot run` with SIGKILL at random moments inside every stage, rerun it each time,
and compare what it leaves with an uninterrupted run: every artifact byte for byte (timings aside)."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES_KILLED = ("generate", "score", "auc", "compress", "train", "eval", "report")
MIN_KILLS = 20

OVERRIDES = [
    "data.n_train=16", "data.n_test=4", "data.auc_samples=8", "generate.batch_size=8", "score.batch_size=8",
    "methods=[{name: original, method: original}, {name: tokenskip, method: tokenskip, gamma: 0.5}]",
    "student.max_steps=4", "student.batch_size=4", "student.checkpoint={every: 2}", "student.progress=false",
    "eval.max_new_tokens=200", "eval.batch_size=4", "eval.latency_samples=1",
]
TIMING_KEYS = ("throughput_tok_s", "latency_s", "times")
STAGE_LINE = re.compile(r"\[jaxcot\.run p0\] (\w+): running$")  # the runner's log line as a stage starts


def command(runs_dir):  # one compilation cache for every launch (a relaunch compiles nothing again)
    return [sys.executable, "-m", "jaxcot.cli", "run", "--config", os.path.join(ROOT, "configs", "demo.yaml"),
            f"runs_dir={runs_dir}", "name=tiny", *OVERRIDES]


def environment(cache):
    return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", JAXCOT_CACHE_DIR=str(cache),
                XLA_FLAGS="--xla_force_host_platform_device_count=1")


def artifacts(root):
    """{relative path: content} of what the run leaves, timing measurements left out."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), root)
            if rel.endswith(".lock") or "/run/" in rel or rel in ("timings.json", "report.md", "results.json") \
                    or rel.endswith(".png") or rel == "eval/latency.json" or rel == "eval/latency.json.meta.json" \
                    or rel.startswith("eval/") and rel.endswith(".md"):  # a student's table shows its throughput
                continue  # checkpoints, timings and what is made of them
            data = open(os.path.join(folder, f), "rb").read()
            if rel.startswith("eval/") and rel.endswith(".json") and not rel.endswith(".meta.json"):
                data = {k: v for k, v in json.loads(data).items() if k not in TIMING_KEYS}
            if rel == "config.yaml":  # the same config but for where the run folder is
                data = {k: v for k, v in yaml.safe_load(data).items() if k != "runs_dir"}
            out[rel] = data
    return out


@pytest.mark.slow
def test_killed_at_random_moments_equals_uninterrupted(tmp_path):
    env = environment(tmp_path / "cache")
    ref = subprocess.run(command(tmp_path / "ref"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    with open(tmp_path / "ref" / "tiny" / "timings.json") as f:
        took = json.load(f)
    rng = random.Random(1234)
    want = artifacts(tmp_path / "ref" / "tiny")
    kills, campaign = [], 0
    while len(kills) < MIN_KILLS:  # each campaign: kill every stage once, as the run reaches it, then finish
        campaign += 1
        runs = tmp_path / f"killed{campaign}"
        plan, launches, kills_before = list(STAGES_KILLED), 0, len(kills)
        while True:
            launches += 1
            assert launches < 50, f"campaign {campaign} never finished"
            proc = subprocess.Popen(command(runs), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            killed = False
            for line in proc.stdout:
                started = STAGE_LINE.search(line.strip())
                stage = started.group(1) if started else None
                while plan and stage in STAGES_KILLED and STAGES_KILLED.index(plan[0]) < STAGES_KILLED.index(stage):
                    plan.pop(0)  # that stage finished before a kill reached it
                if plan and stage == plan[0]:
                    time.sleep(rng.uniform(0.0, 0.6 * took[stage]))  # a random moment, likely inside the stage
                    proc.send_signal(signal.SIGKILL)
                    kills.append(plan.pop(0))
                    killed = True
                    break
            proc.wait(timeout=900)
            if not killed:
                assert proc.returncode == 0, f"campaign {campaign}, launch {launches} failed; kills so far {kills}"
                break
        assert plan == [] and len(kills) > kills_before, \
            f"campaign {campaign} killed nothing: no stage-start line was recognised"
        got = artifacts(runs / "tiny")
        assert sorted(got) == sorted(want), campaign
        assert [k for k in want if got[k] != want[k]] == [], campaign
    assert len(set(kills)) >= 6, kills
