"""Importance on trial: every scorer against a token-level truth, at every layer.

On reference chains (teacher-forced), for each residual stream h^l and each scorer: ROC-AUC and
average precision of its scores against a truth (a bool mask over each scored record's chain
tokens), and its rank agreement (Spearman) with the counterfactual score at that layer, each the
mean over chains. Scorers that do not read a layer (entropy, self-information, attention, random,
...) are computed once and shown at layer None.

The truth is a function of the scored record: the testbed's essential tokens
(`jaxcot.testbed.leaderboard`), or here `arithmetic_truth`, the tokens of a real chain's
arithmetic expressions ("48/2 = 24"), a weaker truth for chains whose roles nobody labelled.

    jaxcot leaderboard --model smollm2 --benchmark gsm8k --split train --samples 16 --layer 0 --layer 20 \\
        --out runs/leaderboard-smollm2 goal=value
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

import numpy as np

from jaxcot.compress.rebuild import expression_groups
from jaxcot.eval.metrics import average_precision, mean_over_traces, roc_auc, spearman
from jaxcot.importance.scorers import NOT_SCORES
from jaxcot.io import atomic_write_json, atomic_write_text

LAYERED = ("gogi", "grad_x_act", "integrated_gradients", "counterfactual")  # the scorers that read h^l
DEFAULT_SCORERS = ("gogi", "grad_x_act", "integrated_gradients", "counterfactual", "entropy", "self_info",
                   "attention", "random")
REFERENCE = "counterfactual"  # the score every other is compared with (agreement)

Truth = Callable[[dict], np.ndarray]  # a scored record -> bool [C] over its chain tokens


# ---------------------------------------------------------------- the arithmetic truth

_OPERATORS = set("+-*/=×÷^−·")
_DIGIT_JOIN = {",", "."}  # "1,000" and "2.5": one number when between digits with no space


def _normalised(pieces: Sequence[str]) -> list[str]:
    """Pieces as `expression_groups` should read them: a lone "," or "." between two digit pieces
    (no whitespace) reads as a digit, so "1,000" and "2.5" are one number however the tokenizer
    splits them; "$" reads as nothing, so "= $24" keeps its result; an "x" between numbers
    ("0.2 x 50", GSM8K's way of writing a product) reads as "*"."""
    out = [p.replace("$", "") for p in pieces]
    for i in range(1, len(out) - 1):
        if out[i] in _DIGIT_JOIN and out[i - 1][-1:].isdigit() and out[i + 1][:1].isdigit():
            out[i] = "0"
    for i in range(1, len(out) - 1):
        if out[i].strip() in ("x", "X") and out[i - 1].rstrip()[-1:].isdigit():
            j = next((k for k in range(i + 1, len(out)) if out[k].strip()), None)
            if j is not None and out[j].lstrip()[:1].isdigit() and all("\n" not in out[k] for k in range(i + 1, j)):
                out[i] = out[i].replace("x", "*").replace("X", "*")
    return out


def arithmetic_mask(pieces: Sequence[str]) -> np.ndarray:
    """True for the chain tokens inside an arithmetic expression: its operands, operators and
    results ("48/2 = 24", "0.2 x 50 = $10", "1,000 + 2.5 * 3 = $1,007.5"), found by
    `jaxcot.compress.rebuild.expression_groups`. A unit with no operator (a number standing alone,
    "48 clips") is not arithmetic; a "$" or whitespace-only token inside an expression is not
    marked. pieces [C] -> bool [C]."""
    norm = _normalised(pieces)
    groups = expression_groups(norm)
    mask = np.zeros(len(pieces), bool)
    for unit in np.unique(groups[groups >= 0]):
        idx = np.flatnonzero(groups == unit)
        if any(ch in _OPERATORS for i in idx for ch in norm[i].strip()):
            mask[idx] = True
    return mask & np.array([bool(p.strip()) for p in norm], bool)


def arithmetic_truth(scored: dict) -> np.ndarray:
    """`arithmetic_mask` of a scored record's chain pieces: bool [C]."""
    return arithmetic_mask(scored["scores"]["pieces"])


# ---------------------------------------------------------------- the leaderboard


def _fields(scored: Sequence[dict]) -> dict[str, list[np.ndarray]]:
    return {k: [np.asarray(r["scores"][k], np.float64) for r in scored]
            for k in scored[0]["scores"] if k not in NOT_SCORES}


def _rows(layer, fields: dict, labels, reference) -> list[dict]:
    return [{"layer": layer, "scorer": name,
             "auc": mean_over_traces(roc_auc, values, labels),
             "ap": mean_over_traces(average_precision, values, labels),
             "agreement": mean_over_traces(spearman, values, reference) if reference is not None else None}
            for name, values in fields.items()]


def _labels(scored: Sequence[dict], truth: Truth) -> list[np.ndarray]:
    out = []
    for r in scored:
        mask = np.asarray(truth(r), bool)
        n = len(r["scores"]["pieces"])
        if mask.shape != (n,):
            raise ValueError(f"record {r.get('id')}: the truth has shape {mask.shape}, its chain {n} tokens")
        out.append(mask)
    return out


def leaderboard(model, tokenizer, records: Sequence[dict], cfg, *, truth: Truth, layers: Sequence[int],
                scorers: Sequence[str] = DEFAULT_SCORERS, progress: bool = True) -> list[dict]:
    """Rows {layer, scorer, auc, ap, agreement} over the reference chains `records` against
    `truth` (scored record -> bool [C]), scored with the `ScoreConfig` `cfg` at each of `layers`
    (layer-free scorers once, layer None; agreement with the counterfactual at the same layer, the
    first for layer-free ones; None when `scorers` leaves the counterfactual out)."""
    from jaxcot.importance.score import score_traces
    from jaxcot.logs import get_logger, progress as progress_bar

    log = get_logger("jaxcot.eval.leaderboard")  # a line per pass where no bar is shown (logs, pipes)

    layered = [s for s in scorers if s in LAYERED]
    free = [s for s in scorers if s not in LAYERED]
    ref = REFERENCE in scorers  # without it (a large model: one forward per chain slot), no agreement column
    out: list[dict] = []
    start = time.perf_counter()
    bar = progress_bar(len(layers) + 1, desc="leaderboard", unit="pass", enabled=progress)
    first_reference = None
    for layer in layers if layered else ():
        sc = dataclasses.replace(cfg, layers=[layer], scorers=layered)
        scored = score_traces(model, tokenizer, records, sc, progress=False)
        fields, labels = _fields(scored), _labels(scored, truth)
        reference = fields[REFERENCE] if ref else None
        first_reference = reference if first_reference is None else first_reference
        out += _rows(layer, fields, labels, reference)
        bar.update(1)
        log.info("layer %d: %s over %d chains (%.0f s so far)", layer, ", ".join(layered), len(records),
                 time.perf_counter() - start)
    if free:
        sc = dataclasses.replace(cfg, layers=[layers[0]], scorers=free)
        scored = score_traces(model, tokenizer, records, sc, progress=False)
        out += _rows(None, _fields(scored), _labels(scored, truth), first_reference)
    bar.update(1)
    bar.close()
    return out


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of `leaderboard` rows, best AUC first within each layer."""
    f = lambda x: "-" if x is None or np.isnan(x) else f"{x:.3f}"  # noqa: E731
    lines = ["| layer | scorer | ROC-AUC | AP | agreement with counterfactual |", "|---|---|---|---|---|"]
    key = lambda r: (r["layer"] is None, r["layer"] or 0, -(r["auc"] if not np.isnan(r["auc"]) else -1))  # noqa: E731
    for r in sorted(rows, key=key):
        lines.append(f"| {'-' if r['layer'] is None else r['layer']} | {r['scorer']} | {f(r['auc'])} | {f(r['ap'])} "
                     f"| {f(r['agreement'])} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: str, truth: str = "essential tokens") -> None:
    """ROC-AUC against the layer, one line per layered scorer, layer-free ones as flat lines;
    `truth` names the truth on the y axis."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    layers = sorted({r["layer"] for r in rows if r["layer"] is not None})
    for name in dict.fromkeys(r["scorer"] for r in rows):
        mine = [r for r in rows if r["scorer"] == name]
        if mine[0]["layer"] is None:
            ax.plot(layers, [mine[0]["auc"]] * len(layers), linestyle="--", label=name)
        else:
            ax.plot([r["layer"] for r in mine], [r["auc"] for r in mine], marker="o", label=name)
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set(xlabel="layer l (residual stream h^l; 0 = embeddings)", ylabel=f"ROC-AUC vs {truth}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_leaderboard(rows: Sequence[dict], out_dir: str, about: dict) -> None:
    """leaderboard.json (rows and `about`: model, samples, truth, command), leaderboard.md and
    leaderboard_layers.png (its y axis naming `about["truth"]`, default the essential tokens) in
    `out_dir`, each written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "leaderboard.json"), {**about, "rows": list(rows)})
    atomic_write_text(os.path.join(out_dir, "leaderboard.md"), format_table(rows) + "\n")
    tmp = os.path.join(out_dir, ".leaderboard_layers.tmp.png")
    plot(rows, tmp, truth=str(about.get("truth", "essential tokens")))
    os.replace(tmp, os.path.join(out_dir, "leaderboard_layers.png"))


__all__ = ["DEFAULT_SCORERS", "LAYERED", "REFERENCE", "Truth", "arithmetic_mask", "arithmetic_truth", "format_table",
           "leaderboard", "plot", "write_leaderboard"]
