"""Evaluation metrics: AUC against a brute-force pair count, chain length, ratios."""

import numpy as np
import pytest

from jaxcot.eval.metrics import (
    accuracy,
    act_ratio,
    cot_tokens,
    importance_auc,
    mean_cot_tokens,
    rankdata,
    roc_auc,
    speedup,
    throughput,
)
from jaxcot.text.answers import split_answer


def brute_auc(s, y):
    pos = [a for a, label in zip(s, y) if label]
    neg = [a for a, label in zip(s, y) if not label]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 5, size=60).astype(float)  # many ties
    y = rng.random(60) < 0.3
    assert roc_auc(s, y) == pytest.approx(brute_auc(s, y), abs=1e-12)


def test_roc_auc_extremes_and_errors():
    assert roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert roc_auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    assert np.isnan(roc_auc([1, 2], [1, 1]))
    with pytest.raises(ValueError):
        roc_auc([1, 2, 3], [1, 0])
    with pytest.raises(ValueError):
        roc_auc([1, np.nan], [1, 0])


def test_rankdata_average_ties():
    np.testing.assert_allclose(rankdata(np.array([10, 20, 10, 30, 20])), [1.5, 3.5, 1.5, 5, 3.5])


def test_importance_auc_mean_vs_pooled():
    # each trace ranks perfectly but on a different scale: mean is 1, pooled is not
    scores = [[10, 11, 0, 1], [100, 101, 50, 60]]
    labels = [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert importance_auc(scores, labels) == 1.0
    assert importance_auc(scores, labels, mode="pooled") < 1.0
    assert importance_auc(scores + [[1, 2]], labels + [[0, 0]]) == 1.0  # one-class trace skipped
    with pytest.raises(ValueError):
        importance_auc(scores, labels, mode="median")


def test_chain_length_and_ratios():
    text = "First 2 + 3 = 5. Then 5 * 2 = 10.\nThe answer is 10."
    chain, answer = split_answer(text)
    assert answer == "The answer is 10." and chain.endswith("10.\n")
    count = lambda t: len(t.split())  # noqa: E731
    assert cot_tokens(text, count) == 12
    assert cot_tokens("no marker at all here", count) == 5
    assert cot_tokens("The answer is 3.", count) == 0
    assert split_answer("so \\boxed{3}")[1] == "so \\boxed{3}"  # the sentence holding the marker
    assert accuracy([True, False, True, True]) == 0.75 and np.isnan(accuracy([]))
    assert mean_cot_tokens([10, 20]) == 15.0
    assert act_ratio(55.0, 100.0) == pytest.approx(0.55)
    assert speedup(2.0, 1.0) == 2.0 and throughput(100, 4.0) == 25.0
    with pytest.raises(ValueError):
        act_ratio(1.0, 0.0)
    with pytest.raises(ValueError):
        speedup(1.0, 0.0)
