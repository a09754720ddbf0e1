"""Kill a tiny `jaxcot run` with SIGKILL at random moments inside every stage, rerun it each time,
and compare what it leaves with an uninterrupted run: every artifact byte for byte (timings aside).

The moments are spread over each stage's whole span on the warm compilation cache (the reruns'),
final writes included; a kill counts only if it landed while its stage ran (the run's stage lines
say where it is), and the test prints, per stage, how many landed and where (run with -s)."""

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
STAGES_KILLED = ("data", "generate", "score", "auc", "compress", "train", "eval", "report")
STRATA = 3  # campaigns; each kills every stage once, in another third of its span
MIN_KILLS = 18  # of the 24, those that landed while their stage ran (a kill late in a stage may find it over)

OVERRIDES = [
    "data.n_train=16", "data.n_test=4", "data.auc_samples=8", "generate.batch_size=8", "score.batch_size=8",
    "methods=[{name: original, method: original}, {name: tokenskip, method: tokenskip, gamma: 0.5}]",
    "student.max_steps=4", "student.batch_size=4", "student.checkpoint={every: 2}", "student.progress=false",
    "eval.max_new_tokens=200", "eval.batch_size=4", "eval.latency_samples=1",
]
TIMING_KEYS = ("throughput_tok_s", "latency_s", "times")
# the runner's log line as a stage starts (or is found done): the run reports which stage it is in
STAGE_LINE = re.compile(r"\[jaxcot\.run p0\] (\w+): (running|done, reusing)")


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
            if rel.endswith(".lock") or "/run/" in rel or rel == "timings.json" \
                    or rel.startswith(("report.", "results.json")) or rel.endswith(".png") \
                    or rel == "eval/latency.json" or rel == "eval/latency.json.meta.json" \
                    or rel.startswith("eval/") and rel.endswith(".md"):  # a student's table shows its throughput
                continue  # checkpoints, timings and what is made of them
            data = open(os.path.join(folder, f), "rb").read()
            if rel.startswith("eval/") and rel.endswith(".json") and not rel.endswith(".meta.json"):
                data = {k: v for k, v in json.loads(data).items() if k not in TIMING_KEYS}
            if rel.startswith("eval/") and rel.endswith(".json.meta.json"):  # its content's digest covers the timings
                data = {k: v for k, v in json.loads(data).items() if k != "content"}
            if rel == "config.yaml":  # the same config but for where the run folder is
                data = {k: v for k, v in yaml.safe_load(data).items() if k != "runs_dir"}
            out[rel] = data
    return out


def launch(runs, env):
    return subprocess.Popen(command(runs), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def warm_spans(runs, env) -> dict[str, float]:
    """{stage: seconds} of an uninterrupted run on the warm compilation cache, from the moments its
    stage lines arrive: a stage's span runs from its line to the next stage's line (the last one's
    to the process's exit), its final writes included."""
    proc, seen = launch(runs, env), []
    for line in proc.stdout:
        found = STAGE_LINE.search(line)
        if found:
            seen.append((found.group(1), time.monotonic()))
    assert proc.wait(timeout=900) == 0, f"the warm run failed after {seen}"
    ends = [t for _, t in seen[1:]] + [time.monotonic()]
    spans = {stage: end - t for (stage, t), end in zip(seen, ends)}
    assert sorted(spans) == sorted(STAGES_KILLED), spans
    return spans


def kill_inside(proc, stage: str, delay: float) -> bool:
    """SIGKILL `proc` `delay` seconds after `stage`'s line; whether the kill landed while the stage
    ran: the process was alive and had not reported another stage (the pipe is drained after the
    kill, so a line written before it is seen)."""
    time.sleep(delay)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait(timeout=60)
    return alive and proc.returncode == -signal.SIGKILL and not STAGE_LINE.search(rest)


def campaign(runs, env, fractions: dict[str, float], spans: dict[str, float], kills: list) -> None:
    """Run in `runs` until it finishes, killing each stage once as the run first reaches it, at
    `fractions[stage]` of its warm span; appends (stage, fraction, landed) to `kills`."""
    plan = list(STAGES_KILLED)
    for launches in range(1, 3 * len(STAGES_KILLED)):
        proc, killed = launch(runs, env), False
        for line in proc.stdout:
            found = STAGE_LINE.search(line.strip())
            stage = found.group(1) if found else None
            while plan and stage in STAGES_KILLED and STAGES_KILLED.index(plan[0]) < STAGES_KILLED.index(stage):
                plan.pop(0)  # that stage finished before a kill reached it
            if plan and stage == plan[0] and found.group(2) == "running":
                plan.pop(0)
                kills.append((stage, fractions[stage], kill_inside(proc, stage, fractions[stage] * spans[stage])))
                killed = True
                break
        if not killed:
            assert proc.wait(timeout=900) == 0, f"{runs}: launch {launches} failed; kills so far {kills}"
            assert plan == [], f"{runs}: stages never killed: {plan}"
            return
    raise AssertionError(f"{runs}: never finished; kills {kills}")


def kill_report(kills, spans) -> str:
    """Per stage: how many kills landed while it ran and where (fraction of its warm span)."""
    lines = []
    for stage in STAGES_KILLED:
        landed = sorted(f for s, f, ok in kills if s == stage and ok)
        missed = sorted(f for s, f, ok in kills if s == stage and not ok)
        lines.append(f"{stage:9s} span {spans[stage]:6.2f}s  landed {len(landed)} at "
                     f"[{', '.join(f'{f:.2f}' for f in landed)}]" + (f"  missed (stage over) at "
                     f"[{', '.join(f'{f:.2f}' for f in missed)}]" if missed else ""))
    return "\n".join(lines)


@pytest.mark.slow
def test_killed_at_random_moments_equals_uninterrupted(tmp_path):
    """Each of STRATA campaigns kills every stage once, the first time the run reaches it, at a
    random moment in one third of the stage's span (the warm run's; each stage meets every third
    once, the last third ending with its final writes: renames, export), reruns until the run
    finishes, and compares what it leaves with the uninterrupted run. Only kills that landed while
    their stage ran count."""
    env = environment(tmp_path / "cache")
    ref = subprocess.run(command(tmp_path / "ref"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    want = artifacts(tmp_path / "ref" / "tiny")
    spans = warm_spans(tmp_path / "warm", env)  # the compilation cache is warm from here on: so are reruns
    assert artifacts(tmp_path / "warm" / "tiny") == want  # a warm cache changes nothing
    rng = random.Random(1234)
    thirds = {stage: rng.sample(range(STRATA), STRATA) for stage in STAGES_KILLED}
    kills = []
    for c in range(STRATA):
        fractions = {stage: (thirds[stage][c] + rng.random()) / STRATA for stage in STAGES_KILLED}
        campaign(tmp_path / f"killed{c}", env, fractions, spans, kills)
        got = artifacts(tmp_path / f"killed{c}" / "tiny")
        assert sorted(got) == sorted(want), c
        assert [k for k in want if got[k] != want[k]] == [], c
    report = kill_report(kills, spans)
    print("kills per stage (fraction of the stage's warm span):\n" + report)
    landed = [(s, f) for s, f, ok in kills if ok]
    assert len(landed) >= MIN_KILLS, report
    assert {s for s, _ in landed} == set(STAGES_KILLED), report  # every stage killed while it ran
    assert sum(f >= 0.6 for _, f in landed) >= 3, report  # and late in their stage: final writes
