"""Evaluation numbers as pure functions: accuracy, chain length, ActRatio, speedup, importance AUC."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jaxcot.text.answers import split_answer


def accuracy(correct: Sequence[bool]) -> float:
    """Share of True in `correct` [N]; nan for an empty list."""
    arr = np.asarray(correct, dtype=bool)
    return float(arr.mean()) if arr.size else float("nan")


def cot_tokens(completion: str, count_tokens: Callable[[str], int]) -> int:
    """Tokens of the chain, the text before the answer (`jaxcot.text.answers.split_answer`),
    counted by `count_tokens(text) -> int`; 0 for a completion that is all answer."""
    chain, _ = split_answer(completion)
    return int(count_tokens(chain.rstrip())) if chain.strip() else 0


def mean_cot_tokens(lengths: Sequence[int]) -> float:
    """Mean of per-sample chain token counts [N]; nan for none."""
    arr = np.asarray(lengths, dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def act_ratio(method_mean_tokens: float, base_mean_tokens: float) -> float:
    """ActRatio: a method's mean CoT tokens over the uncompressed model's (1.0 = no change)."""
    if base_mean_tokens <= 0:
        raise ValueError(f"act_ratio: base mean tokens must be positive, got {base_mean_tokens}")
    return float(method_mean_tokens) / float(base_mean_tokens)


def speedup(base_seconds: float, method_seconds: float) -> float:
    """Speedup of a method over the base: base time over method time (same work, same run)."""
    if method_seconds <= 0:
        raise ValueError(f"speedup: method time must be positive, got {method_seconds}")
    return float(base_seconds) / float(method_seconds)


def throughput(tokens: int, seconds: float) -> float:
    """Generated tokens per second."""
    if seconds <= 0:
        raise ValueError(f"throughput: seconds must be positive, got {seconds}")
    return float(tokens) / float(seconds)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of x [N] with ties given their average rank (float64 [N])."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of tie groups in sorted order
    new_group = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    group_id = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.concatenate([starts[1:], [len(x)]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1..end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[group_id]
    return ranks


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC of `scores` [N] for binary `labels` [N] (Mann-Whitney U / (n_pos n_neg)); ties
    count one half. nan when a class is empty. Raises on length mismatch or non-finite scores."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"roc_auc: scores {s.shape} and labels {y.shape} must be equal 1-D shapes")
    if not np.all(np.isfinite(s)):
        raise ValueError("roc_auc: scores contain nan or inf")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def importance_auc(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]], mode: str = "mean") -> float:
    """AUC of token importance against ground-truth essential labels over many traces.

    scores, labels: per trace, [T_i] each. mode "mean": the mean of per-trace AUCs (traces with
    one class only are skipped; scale differences between traces do not matter); "pooled": one
    AUC over all tokens together.
    """
    if len(scores) != len(labels):
        raise ValueError(f"importance_auc: {len(scores)} score lists but {len(labels)} label lists")
    if mode == "pooled":
        return roc_auc(np.concatenate([np.asarray(s, np.float64) for s in scores]) if scores else [],
                       np.concatenate([np.asarray(y, bool) for y in labels]) if labels else [])
    if mode != "mean":
        raise ValueError(f"importance_auc: mode must be 'mean' or 'pooled', got {mode!r}")
    aucs = [roc_auc(s, y) for s, y in zip(scores, labels)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Average precision of `scores` [N] ranking the positive `labels` [N] first: the mean over
    positives of the precision at each positive's rank (tied scores share the precision of their
    group's end, so ties never help). nan without positives."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"average_precision: scores {s.shape} and labels {y.shape} must be equal 1-D shapes")
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.concatenate([s[1:] != s[:-1], [True]])  # the end of each group of tied scores
    ends = np.flatnonzero(last)
    hits = np.cumsum(y)[ends]
    group = np.cumsum(np.concatenate([[0], last[:-1]]))  # the tie group of each position
    precision = hits / (ends + 1)
    return float(np.sum(precision[group][y]) / y.sum())


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of a [N] and b [N] (average ranks for ties); nan when either
    is constant or N < 2."""
    ra, rb = rankdata(np.asarray(a, np.float64)), rankdata(np.asarray(b, np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def mean_over_traces(fn: Callable, xs: Sequence, ys: Sequence) -> float:
    """The mean of fn(x_i, y_i) over traces, those where it is nan left out (nan if all are)."""
    vals = [fn(np.asarray(x), np.asarray(y)) for x, y in zip(xs, ys)]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")
