"""Importance on trial: every scorer against the testbed's ground truth, at every layer.

On reference chains (teacher-forced, so the roles are known), for each residual stream h^l and
each scorer: ROC-AUC and average precision of its scores against the essential tokens (the
working equations' operands and results, `essential_mask`), and its rank agreement (Spearman)
with the counterfactual score at that layer, each the mean over chains. Scorers that do not read
a layer (entropy, self-information, attention, random, ...) are computed once and shown at
layer None.

    jaxcot testbed leaderboard --model teacher --samples 100 --out runs/leaderboard
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from jaxcot.eval.metrics import average_precision, mean_over_traces, roc_auc, spearman
from jaxcot.importance.scorers import NOT_SCORES
from jaxcot.io import atomic_write_json, atomic_write_text
from jaxcot.testbed.roles import essential_mask, offsets_from_pieces, token_roles

LAYERED = ("gogi", "grad_x_act", "integrated_gradients", "counterfactual")  # the scorers that read h^l
DEFAULT_SCORERS = ("gogi", "grad_x_act", "integrated_gradients", "counterfactual", "entropy", "self_info",
                   "attention", "random")


def _labels(scored: Sequence[dict]) -> list[np.ndarray]:
    return [np.asarray(essential_mask(token_roles(r, offsets_from_pieces(r["scores"]["pieces"]))), bool)
            for r in scored]


def _fields(scored: Sequence[dict]) -> dict[str, list[np.ndarray]]:
    return {k: [np.asarray(r["scores"][k], np.float64) for r in scored]
            for k in scored[0]["scores"] if k not in NOT_SCORES}


def _rows(layer, fields: dict, labels, reference) -> list[dict]:
    return [{"layer": layer, "scorer": name,
             "auc": mean_over_traces(roc_auc, values, labels),
             "ap": mean_over_traces(average_precision, values, labels),
             "agreement": mean_over_traces(spearman, values, reference) if reference is not None else None}
            for name, values in fields.items()]


def leaderboard(model, tokenizer, records: Sequence[dict], cfg, *, layers: Sequence[int],
                scorers: Sequence[str] = DEFAULT_SCORERS, progress: bool = True) -> list[dict]:
    """Rows {layer, scorer, auc, ap, agreement} over the reference chains `records`, scored with
    the `ScoreConfig` `cfg` at each of `layers` (layer-free scorers once, layer None; agreement
    with the counterfactual at the first layer)."""
    from jaxcot.importance.score import score_traces
    from jaxcot.logs import progress as progress_bar

    layered = [s for s in scorers if s in LAYERED]
    free = [s for s in scorers if s not in LAYERED]
    ref = "counterfactual"
    out: list[dict] = []
    bar = progress_bar(len(layers) + 1, desc="leaderboard", unit="pass", enabled=progress)
    first_reference = None
    for layer in layers:
        sc = dataclasses.replace(cfg, layers=[layer], scorers=list(dict.fromkeys([*layered, ref])))
        scored = score_traces(model, tokenizer, records, sc, progress=False)
        fields, labels = _fields(scored), _labels(scored)
        first_reference = fields[ref] if first_reference is None else first_reference
        out += _rows(layer, {k: v for k, v in fields.items() if k in scorers}, labels, fields[ref])
        bar.update(1)
    if free:
        sc = dataclasses.replace(cfg, layers=[layers[0]], scorers=free)
        scored = score_traces(model, tokenizer, records, sc, progress=False)
        out += _rows(None, _fields(scored), _labels(scored), first_reference)
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


def plot(rows: Sequence[dict], path: str) -> None:
    """ROC-AUC against the layer, one line per layered scorer, layer-free ones as flat lines."""
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
    ax.set(xlabel="layer l (residual stream h^l; 0 = embeddings)", ylabel="ROC-AUC vs essential tokens")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_leaderboard(rows: Sequence[dict], out_dir: str, about: dict) -> None:
    """leaderboard.json (rows and `about`: model, samples, command), leaderboard.md and
    leaderboard_layers.png in `out_dir`, each written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, "leaderboard.json"), {**about, "rows": list(rows)})
    atomic_write_text(os.path.join(out_dir, "leaderboard.md"), format_table(rows) + "\n")
    tmp = os.path.join(out_dir, ".leaderboard_layers.tmp.png")
    plot(rows, tmp)
    os.replace(tmp, os.path.join(out_dir, "leaderboard_layers.png"))


__all__ = ["DEFAULT_SCORERS", "LAYERED", "format_table", "leaderboard", "plot", "write_leaderboard"]
