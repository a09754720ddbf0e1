"""The importance leaderboard: its metrics against brute-force definitions, and the command's
table, JSON and plot on a tiny model."""

import itertools
import json
import os

import numpy as np
import pytest

from jaxcot.eval.metrics import average_precision, mean_over_traces, spearman


def _brute_ap(scores, labels):
    """Mean over positives of precision at the rank where the scores reach the positive's score,
    ties counted pessimistically (every tied item ranked above)."""
    pos = [i for i, y in enumerate(labels) if y]
    out = []
    for i in pos:
        above = [j for j in range(len(scores)) if scores[j] >= scores[i]]
        out.append(sum(labels[j] for j in above) / len(above))
    return float(np.mean(out))


def test_average_precision_and_spearman_against_their_definitions():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 17):
        for _ in range(30):
            s = rng.integers(0, 4, n).astype(float)  # many ties
            y = rng.random(n) < 0.4
            if y.any():
                assert average_precision(s, y) == pytest.approx(_brute_ap(s, y), abs=1e-12)
    assert np.isnan(average_precision([1.0, 2.0], [False, False]))
    assert average_precision([3.0, 2.0, 1.0], [True, True, False]) == 1.0
    a = rng.random(12)
    assert spearman(a, a ** 3) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert mean_over_traces(spearman, [a, [1.0, 1.0]], [a, [1.0, 2.0]]) == pytest.approx(1.0)  # nan left out
    for perm in itertools.permutations(range(4)):
        ranks = np.array(perm, float)
        assert spearman(ranks, np.arange(4.0)) == pytest.approx(np.corrcoef(ranks, np.arange(4.0))[0, 1])


def test_leaderboard_rows_table_and_plot(tmp_path):
    from jaxcot.importance.config import ScoreConfig
    from jaxcot.models import ModelConfig, init_model
    from jaxcot.testbed.leaderboard import format_table, leaderboard, write_leaderboard
    from jaxcot.testbed.problems import generate
    from jaxcot.testbed.tokenizer import build_testbed_tokenizer

    tok = build_testbed_tokenizer(sample=20)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16)
    refs = list(generate(3, 5))
    rows = leaderboard(init_model(cfg, 0), tok, refs, ScoreConfig(batch_size=4), layers=[0, 2],
                       scorers=["gogi", "counterfactual", "entropy", "random"], progress=False)
    got = {(r["layer"], r["scorer"]) for r in rows}
    assert got == {(0, "gogi"), (0, "counterfactual"), (2, "gogi"), (2, "counterfactual"), (None, "entropy"),
                   (None, "random")}
    for r in rows:
        assert 0.0 <= r["auc"] <= 1.0 and 0.0 < r["ap"] <= 1.0
    cf = [r for r in rows if r["scorer"] == "counterfactual"]
    assert all(r["agreement"] == pytest.approx(1.0) for r in cf)  # the reference agrees with itself
    # without the counterfactual (one forward per chain slot: costly on a large model) the same scores, no agreement
    lean = leaderboard(init_model(cfg, 0), tok, refs, ScoreConfig(batch_size=4), layers=[0, 2],
                       scorers=["gogi", "entropy"], progress=False)
    assert {(r["layer"], r["scorer"]) for r in lean} == {(0, "gogi"), (2, "gogi"), (None, "entropy")}
    assert all(r["agreement"] is None for r in lean)
    same = {(r["layer"], r["scorer"]): r["auc"] for r in rows}
    assert all(r["auc"] == pytest.approx(same[r["layer"], r["scorer"]]) for r in lean)
    write_leaderboard(rows, str(tmp_path), {"model": "tiny"})
    saved = json.load(open(tmp_path / "leaderboard.json"))
    assert saved["model"] == "tiny" and len(saved["rows"]) == len(rows)
    assert (tmp_path / "leaderboard.md").read_text().startswith(format_table(rows)[:40])
    assert os.path.getsize(tmp_path / "leaderboard_layers.png") > 1000
