"""`jaxcot run` as two processes on loopback (jax.distributed, gloo CPU collectives, one device
each) gives what one process gives: the same traces and scores byte for byte (each process runs
whole batches of the one-process plan, and process 0 gathers them in its order), the same
training sets, students equal within float32 rounding (their steps are one SPMD program over both
processes' devices, against one device), GRPO after a student with the same rewards and a policy
equal within float32 rounding (its rollouts split over the processes), the same evaluation and the
same report rows; a second launch reuses everything."""

import json
import os
import sys

import numpy as np
import pytest
import safetensors.numpy
from processes import free_port, run_all

from jaxcot.distributed import Share, gather_parts, part_path
from jaxcot.io import DataError, atomic_write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["data.n_train=16", "data.n_test=8", "data.auc_samples=4", "generate.batch_size=4",
             "generate.max_new_tokens=160", "score.batch_size=4",
             "methods=[{name: original, method: original}, {name: gogi-skip, method: gogi-ads, gamma: 0.5,"
             " knobs: {ads: {calibrate: true}}}]",
             "student.max_steps=2", "student.batch_size=4", "eval.max_new_tokens=160", "eval.batch_size=4",
             "eval.latency_samples=2",
             # GoGI-Skip's student followed by GRPO: its rollouts split over the processes by sampler batch
             "rl.methods=[gogi-skip]",
             "rl.grpo={method: full, max_steps: 2, prompts_per_step: 2, num_generations: 2, rollout_batch_size: 2,"
             " max_new_tokens: 48, optim: {lr: 1.0e-4, warmup_ratio: 0.0}, sampling: {temperature: 0.8}}"]


def launch(runs_dir, name, processes: int = 1, extra=()):
    """`jaxcot run` on the demo config, as `processes` processes; returns their outputs."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "jaxcot", "run", "--config", "configs/demo.yaml", f"runs_dir={runs_dir}",
           f"name={name}", *OVERRIDES, *extra]
    port = free_port()
    dist = [["distributed.enabled=true", f"distributed.coordinator=127.0.0.1:{port}",
             f"distributed.num_processes={processes}", f"distributed.process_id={i}"] for i in range(processes)]
    return run_all([cmd + (d if processes > 1 else []) for d in dist], env=env, cwd=ROOT)


def _rows(root):
    res = json.load(open(os.path.join(root, "results.json")))
    timing = ("latency", "speedup", "throughput")
    return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in res["rows"]]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    launch(tmp_path, "one")
    outs = launch(tmp_path, "two", processes=2)
    one, two = tmp_path / "one", tmp_path / "two"
    assert "[jaxcot.run p0] generate: running (each process its share)" in outs[0]
    assert "[jaxcot." not in outs[1] and "stage timings" not in outs[1]  # process 0 alone logs and reports
    for rel in ("data/train.jsonl", "traces.jsonl", "scored.jsonl", "sets/original.jsonl", "sets/gogi-skip.jsonl"):
        assert (two / rel).read_bytes() == (one / rel).read_bytes(), rel  # same records, same order
    assert not [p for p in two.rglob("*") if ".part-" in p.name]  # the parts were gathered and removed
    for name in ("original", "gogi-skip"):
        a = safetensors.numpy.load_file(one / "students" / name / "model" / "model.safetensors")
        b = safetensors.numpy.load_file(two / "students" / name / "model" / "model.safetensors")
        assert a.keys() == b.keys()
        # The gradients agree to float32 rounding (one device's sum against two devices' partial
        # sums); AdamW's first steps divide by |g|, so a gradient entry that is ~0 can turn that
        # rounding into a visible step: at most 1 in 100,000 weights (3 of 1.08M here) differ by > 1e-5.
        off = sum(int((np.abs(a[k] - b[k]) > 1e-5).sum()) for k in a)
        total = sum(v.size for v in a.values())
        assert off <= 1e-5 * total and max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4, (name, off)
        ea, eb = (json.load(open(r / "eval" / f"{name}.json")) for r in (one, two))
        assert (eb["accuracy"], eb["mean_cot_tokens"], eb["examples"]) == (ea["accuracy"], ea["mean_cot_tokens"],
                                                                           ea["examples"])
    # the GRPO row: the same rollouts' rewards, the policy equal within float32 rounding
    pa, pb = (one / "students" / "gogi-skip-grpo", two / "students" / "gogi-skip-grpo")
    ma, mb = ([json.loads(line) for line in open(p / "run" / "metrics.jsonl")] for p in (pa, pb))
    assert len(ma) == len(mb) == 2 and [r["reward"] for r in mb] == [r["reward"] for r in ma]
    a, b = (safetensors.numpy.load_file(p / "model" / "model.safetensors") for p in (pa, pb))
    assert a.keys() == b.keys() and max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4
    assert _rows(two) == _rows(one) and "gogi-skip+grpo" in [r["method"] for r in _rows(two)]
    lat = json.load(open(two / "eval" / "latency.json"))
    assert set(lat["latency_s"]) == {"original", "gogi-skip", "gogi-skip+grpo"}  # process 0 timed every row
    # a second two-process launch finds every stage done
    again = launch(tmp_path, "two", processes=2)
    assert "traces.jsonl" in again[0] and "generate: done, reusing" in again[0]
    assert "train: done, reusing" in again[0] and "eval: done, reusing" in again[0]
    assert "rl: done, reusing" in again[0]


def test_gather_parts_restores_the_input_order(tmp_path):
    out = str(tmp_path / "traces.jsonl")
    plan = [["q3", "q0"], ["q5", "q1"], ["q2", "q4"], ["q6"]]  # one process's batches of 2, in order
    ids = [f"q{i}" for i in range(7)]
    for i in range(2):
        atomic_write_jsonl(part_path(out, Share(i, 2)), [{"id": q} for b in Share(i, 2).take(plan) for q in b])
    atomic_write_jsonl(part_path(out, Share(2, 3)) + ".partial", [{"id": "q6"}])  # a launch of 3, interrupted
    assert gather_parts(out, ids, 2) == 7
    assert [json.loads(line)["id"] for line in open(out)] == ids
    assert sorted(os.listdir(tmp_path)) == ["traces.jsonl"]
    assert Share(1, 3).take(list(range(8))) == [1, 4, 7] and part_path(out, Share()) == out


def test_gather_parts_refuses_unfinished_overlapping_or_missing_parts(tmp_path):
    out = str(tmp_path / "scored.jsonl")
    ids = ["a", "b", "c", "d"]
    atomic_write_jsonl(part_path(out, Share(0, 2)), [{"id": "a"}, {"id": "b"}])
    with pytest.raises(DataError, match="part .*part-1-of-2 is not finished"):
        gather_parts(out, ids, 2)
    atomic_write_jsonl(part_path(out, Share(1, 2)), [{"id": "b"}, {"id": "c"}])
    with pytest.raises(DataError, match="id 'b' is in two parts"):
        gather_parts(out, ids, 2)
    atomic_write_jsonl(part_path(out, Share(1, 2)), [{"id": "c"}])
    with pytest.raises(DataError, match="no part holds id 'd'"):
        gather_parts(out, ids, 2)
    atomic_write_jsonl(part_path(out, Share(1, 2)), [{"id": "c"}, {"id": "x"}])
    with pytest.raises(DataError, match="id 'x', which is not in the input"):
        gather_parts(out, ids, 2)
    assert not os.path.exists(out)
