"""The research axes as plug-ins: a scorer and a rule from a module outside `jaxcot/`, named in
a run config (one file, one YAML line each), and `jaxcot run` scores, compresses, trains and
evaluates with them."""

import json
import os
import textwrap

import numpy as np
import pytest

from jaxcot.config import load_config
from jaxcot.run import RunConfig, run_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLUGIN = textwrap.dedent('''
    """A fork's own importance score and compression rule."""
    import numpy as np


    def digit_scorer(batch):
        """1 on chain tokens holding a digit, else 0, plus a small rise along the chain."""
        out = []
        for r in range(len(batch.records)):
            pieces = batch.pieces(r)
            ramp = np.arange(len(pieces)) / (10.0 * max(len(pieces), 1))
            out.append(np.array([any(c.isdigit() for c in p) for p in pieces], np.float32) + ramp)
        return {"digits": out}


    def keep_scored_above_one_half(chain, cfg):
        """Keep every token whose importance is at least 0.5 and the chain's trailing whitespace."""
        keep = chain.importance >= 0.5
        tail = len(chain.pieces) - len("".join(chain.pieces)) + len("".join(chain.pieces).rstrip())
        keep[tail:] = True
        return keep


    def scores_not_a_mask(chain, cfg):
        return chain.importance
''')


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_fork_plugins.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_fork_plugins"


def test_a_scorer_and_a_rule_from_outside_run_end_to_end(plugin, tiny_model_folder, tmp_path):
    overrides = [
        f"model={tiny_model_folder}", "name=p", f"runs_dir={tmp_path / 'runs'}", "data.n_train=16", "data.n_test=4",
        "generate.source=reference", "data.auc_samples=4",
        "score.batch_size=8", "score.scorers=[gogi, entropy, self_info, my_fork_plugins:digit_scorer]",
        "methods=[{name: original, method: original},"
        " {name: mine, method: gogi-static, knobs: {rule: 'my_fork_plugins:keep_scored_above_one_half',"
        " importance: digits}}]",
        "student.max_steps=2", "student.batch_size=8", "student.data.max_len=256",
        "eval.max_new_tokens=8", "eval.batch_size=4", "eval.latency_samples=1",
    ]
    out = run_pipeline(load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"), overrides))
    root = out["root"]
    scored = [json.loads(line) for line in open(os.path.join(root, "scored.jsonl"))]
    sets = {e["id"]: e for e in map(json.loads, open(os.path.join(root, "sets", "mine.jsonl")))}
    assert scored and set(sets) <= {r["id"] for r in scored}
    for rec in scored:
        pieces, digits = rec["scores"]["pieces"], np.asarray(rec["scores"]["digits"])
        assert list(digits >= 1.0) == [any(c.isdigit() for c in p) for p in pieces]  # the scorer's field, stored
        if rec["id"] in sets:  # the rule's mask, on the scorer's numbers: the digit tokens and the trailing space
            text = "".join(pieces)
            n_tail = len(text) - len(text.rstrip())
            assert sets[rec["id"]]["kept"] == int((digits >= 0.5).sum()) + (1 if n_tail and digits[-1] < 0.5 else 0)
    summary = json.load(open(os.path.join(root, "sets", "mine.summary.json")))
    assert (summary["rule"], summary["importance"]) == ("my_fork_plugins:keep_scored_above_one_half", "digits")
    assert os.path.exists(os.path.join(root, "students", "mine", "model", "config.json"))
    rows = {r["method"]: r for r in json.load(open(os.path.join(root, "results.json")))["rows"]}
    assert set(rows) == {"original", "mine"} and rows["mine"]["retained"] < 0.9


def test_a_rule_registered_in_code_and_bad_plug_ins_are_named(plugin):
    from scored_fixtures import scored_records

    from jaxcot.compress import compress_records
    from jaxcot.compress.registry import RULES
    from jaxcot.importance.config import ScoreConfig

    recs = scored_records(4, seed=2)
    try:
        RULES.register("first-half", lambda chain, cfg: np.arange(len(chain)) < len(chain) // 2)
        out = compress_records(recs, "gogi-static", rule="first-half")
        assert [d.kept for d in out.details] == [len(r["scores"]["pieces"]) // 2 for r in recs]
    finally:
        RULES._entries.pop("first-half")
    with pytest.raises(ValueError, match="rule 'my_fork_plugins:nope': module 'my_fork_plugins' has no attribute"):
        compress_records(recs, "gogi-static", rule="my_fork_plugins:nope")
    with pytest.raises(ValueError, match=r"keep mask of float32 \(\d+,\); the chain has \d+ tokens \(bool \[C\]\)"):
        compress_records(recs, "gogi-static", rule="my_fork_plugins:scores_not_a_mask")
    with pytest.raises(ValueError, match="unknown scorer 'nosuch'"):
        ScoreConfig(scorers=["gogi", "nosuch"])
