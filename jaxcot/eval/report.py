"""The report: a markdown table per benchmark, the accuracy-vs-tokens plot, and JSON of every number.

A row is one method on one benchmark (see `MethodResult`); the importance table compares
importance sources against the testbed's ground-truth roles (ROC-AUC).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from jaxcot.io import atomic_open, atomic_write_json, atomic_write_text


@dataclasses.dataclass
class MethodResult:
    """One method on one benchmark. Latency in seconds per sample at batch 1; throughput in
    generated tokens per second at the large batch; speedup = baseline latency / this latency.
    mean_cache_peak and early_exit_share: a row decoded by the continuous engine (a run's decoder
    rows, `jaxcot.eval.students.DecoderRow`): KV-cache slots a row held at most, prompt included,
    on average, and the share of chains an early exit ended."""

    method: str
    benchmark: str
    n: int
    accuracy: float
    mean_cot_tokens: float
    act_ratio: float
    latency_s: float
    throughput_tok_s: float
    speedup: float
    train_examples: int | None = None
    retained: float | None = None  # mean retained share of chain tokens in its training set
    mean_cache_peak: float | None = None
    early_exit_share: float | None = None


def method_rows(evals: dict[str, dict], base: str, benchmark: str,
                summaries: dict[str, dict] | None = None) -> list[MethodResult]:
    """Table rows from eval results ({name: evaluate_student's dict with latency_s}), ActRatio and
    speedup against the row `base`; `summaries` ({name: compress summary}) adds each row's
    training examples and retained share."""
    from jaxcot.eval.metrics import act_ratio, speedup

    summaries = summaries or {}
    ref = evals[base]
    rows = []
    for name, r in evals.items():
        s = summaries.get(name)
        rows.append(MethodResult(
            method=name, benchmark=benchmark, n=r["n"], accuracy=r["accuracy"], mean_cot_tokens=r["mean_cot_tokens"],
            # an untrained control may write no chain at all
            act_ratio=(act_ratio(r["mean_cot_tokens"], ref["mean_cot_tokens"]) if ref["mean_cot_tokens"] > 0
                       else float("nan")),
            latency_s=r["latency_s"], throughput_tok_s=r["throughput_tok_s"],
            speedup=speedup(ref["latency_s"], r["latency_s"]),
            train_examples=None if s is None else s.get("written"),
            retained=None if s is None else float(s["retained_ratio"]["mean"]),
            mean_cache_peak=r.get("mean_cache_peak"), early_exit_share=r.get("early_exit_share"),
        ))
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


PEAK_KV = "peak KV/row"  # the column of `mean_cache_peak`, shown where some row has one


def markdown_table(rows: Sequence[MethodResult]) -> str:
    """The rows as Markdown; a peak KV/row column (blank where a row has none) where some row was
    decoded by the continuous engine."""
    peak = any(r.mean_cache_peak is not None for r in rows)
    head = (
        "| method | n | accuracy | CoT tokens | ActRatio | latency (s, b=1) | throughput (tok/s) | speedup "
        "| train retained |" + (f" {PEAK_KV} |" if peak else "") + "\n"
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if peak else "") + "\n"
    )
    body = "".join(
        f"| {r.method} | {r.n} | {100 * r.accuracy:.1f}% | {r.mean_cot_tokens:.1f} | {r.act_ratio:.2f} | "
        f"{r.latency_s:.4f} | {r.throughput_tok_s:.0f} | {r.speedup:.2f}x | {_fmt(r.retained, '.2f')} |"
        + (f" {'' if r.mean_cache_peak is None else format(r.mean_cache_peak, '.1f')} |" if peak else "") + "\n"
        for r in rows
    )
    return head + body


def model_table(results: dict[str, dict]) -> str:
    """A Markdown table of `evaluate_model` results ({row name: result}); a number a result lacks
    (no latency pass, no baseline) shows as '-'. A peak KV/row column where some result has
    `mean_cache_peak` (the continuous engine)."""
    def cell(r: dict, key: str, spec: str, scale: float = 1.0) -> str:
        v = r.get(key)
        return "-" if v is None else format(scale * v, spec)

    peak = any(r.get("mean_cache_peak") is not None for r in results.values())
    head = ("| model | n | accuracy | CoT tokens | ActRatio | latency (s, b=1) | throughput (tok/s) | speedup |"
            + (f" {PEAK_KV} |" if peak else "") + "\n|---|---|---|---|---|---|---|---|" + ("---|" if peak else "")
            + "\n")
    body = "".join(
        f"| {name} | {r['n']} | {cell(r, 'accuracy', '.1f', 100)}% | {cell(r, 'mean_cot_tokens', '.1f')} | "
        f"{cell(r, 'act_ratio', '.2f')} | {cell(r, 'latency_s', '.4f')} | {cell(r, 'throughput_tok_s', '.0f')} | "
        f"{cell(r, 'speedup', '.2f')} |" + (f" {cell(r, 'mean_cache_peak', '.1f')} |" if peak else "") + "\n"
        for name, r in results.items()
    )
    return head + body


def importance_table(auc: dict[str, dict[str, float]]) -> str:
    """auc: {source: {"auc": .., "n_tokens": ..}} -> markdown."""
    head = "| importance source | ROC-AUC vs essential roles | tokens |\n|---|---|---|\n"
    body = "".join(
        f"| {name} | {v['auc']:.3f} | {int(v.get('n_tokens', 0))} |\n"
        for name, v in sorted(auc.items(), key=lambda kv: -kv[1]["auc"])
    )
    return head + body


# Candidate label offsets from a point (x right, y up, in units of the label's height; a label
# left of its point also moves by its own width), nearest first.
_LABEL_SPOTS = ((0.5, 0.3), (0.5, -1.2), (-0.5, 0.3), (-0.5, -1.2), (0.5, 1.5), (0.5, -2.4), (-0.5, 1.5),
                (-0.5, -2.4), (0.5, 2.7), (0.5, -3.6), (-0.5, 2.7), (-0.5, -3.6))


def place_labels(points: Sequence[tuple[float, float]], widths: Sequence[float], height: float,
                 radius: float = 4.0, bounds: tuple[float, float, float, float] | None = None
                 ) -> list[tuple[float, float]]:
    """Where each point's label goes, greedily without overlap: for each point (in display units,
    y up) the first spot of `_LABEL_SPOTS` whose box (`widths[i]` x `height`) overlaps no placed
    label nor any point (a square of side 2*`radius`) and stays inside `bounds` (x0, y0, x1, y1)
    where given. Returns each label's lower-left corner
    offset from its point; where every spot overlaps, the one overlapping least."""
    def overlap(a, b) -> float:
        dx = min(a[2], b[2]) - max(a[0], b[0])
        dy = min(a[3], b[3]) - max(a[1], b[1])
        return max(dx, 0.0) * max(dy, 0.0)

    dots = [(x - radius, y - radius, x + radius, y + radius) for x, y in points]
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for (x, y), w in zip(points, widths):
        best = None
        for sx, sy in _LABEL_SPOTS:
            dx = sx * height + (radius if sx > 0 else -radius - w)
            dy = sy * height
            box = (x + dx, y + dy, x + dx + w, y + dy + height)
            cost = sum(overlap(box, o) for o in placed + dots)
            if bounds is not None:
                cost += (box[2] - box[0]) * (box[3] - box[1]) - overlap(box, bounds)
            if best is None or cost < best[0]:
                best = (cost, dx, dy, box)
            if cost == 0:
                break
        placed.append(best[3])
        out.append((best[1], best[2]))
    return out


def accuracy_vs_tokens_figure(rows: Sequence[MethodResult], title: str = "",
                              curves: dict[str, Sequence[str]] | None = None):
    """One point per method: mean CoT tokens (x) against accuracy (y), the paper's figure 1. A
    `matplotlib.figure.Figure` made without pyplot, so a notebook's backend is left alone. Labels
    are placed by `place_labels` (no two overlap, none covers a point), each in its point's colour.
    curves: {label: row names}, each drawn as a line through its rows in order of tokens (one
    student asked for several ratios, or a student per ratio), named in a legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), dpi=120)
    ax = fig.subplots()
    by_name = {r.method: r for r in rows}
    for i, (label, names) in enumerate((curves or {}).items()):
        pts = sorted((by_name[n].mean_cot_tokens, 100 * by_name[n].accuracy) for n in names if n in by_name)
        ax.plot([x for x, _ in pts], [y for _, y in pts], linestyle=("-", ":", "--", "-.")[i % 4],
                color="0.45", linewidth=1.2, label=label, zorder=1)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    xs, ys = [r.mean_cot_tokens for r in rows], [100 * r.accuracy for r in rows]
    colours = [ax.scatter(x, y, s=60).get_facecolor()[0] for x, y in zip(xs, ys)]
    ax.set_xlabel("mean CoT tokens")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy vs chain length")
    ax.grid(alpha=0.3)
    ax.margins(0.25, 0.15)  # room for the labels inside the axes
    fig.tight_layout()
    px = fig.dpi / 72.0  # display pixels per point
    shown = [tuple(ax.transData.transform((x, y))) for x, y in zip(xs, ys)]
    fontsize = 8
    widths = [0.6 * fontsize * len(r.method) * px for r in rows]
    spots = place_labels(shown, widths, 1.3 * fontsize * px, radius=4.5 * px, bounds=tuple(ax.bbox.extents))
    for r, x, y, (dx, dy), c in zip(rows, xs, ys, spots, colours):  # each label in its point's colour
        ax.annotate(r.method, (x, y), textcoords="offset points", xytext=(dx / px, dy / px), fontsize=fontsize,
                    ha="left", va="bottom", color=c)
    return fig


def plot_accuracy_vs_tokens(rows: Sequence[MethodResult], path: str | os.PathLike, title: str = "",
                            curves: dict[str, Sequence[str]] | None = None) -> None:
    """`accuracy_vs_tokens_figure` written to `path` as a PNG (atomically)."""
    fig = accuracy_vs_tokens_figure(rows, title, curves)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[MethodResult],
    *,
    title: str,
    importance_auc: dict[str, dict[str, float]] | None = None,
    timings: dict[str, float] | None = None,
    notes: Sequence[str] = (),
    examples: dict[str, str] | None = None,
    curves: dict[str, Sequence[str]] | None = None,
) -> str:
    """Write report.md, results.json and one accuracy_vs_tokens_<benchmark>.png per benchmark.
    examples: {method: one training completion} (the same question for every method); curves:
    {label: row names} joined by a line in the plot (`accuracy_vs_tokens_figure`)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# {title}", ""]
    benchmarks = list(dict.fromkeys(r.benchmark for r in rows))
    for bench in benchmarks:
        sub = [r for r in rows if r.benchmark == bench]
        png = f"accuracy_vs_tokens_{bench}.png"
        plot_accuracy_vs_tokens(sub, os.path.join(out_dir, png), title=f"{title}: {bench}", curves=curves)
        lines += [f"## {bench}", "", markdown_table(sub), f"![accuracy vs tokens]({png})", ""]
    if importance_auc:
        lines += ["## Importance against ground-truth roles", "", importance_table(importance_auc), ""]
    if examples:
        lines += ["## One training chain, as each method writes it", ""]
        for method, text in examples.items():
            lines += [f"**{method}**", "", "```", text.strip(), "```", ""]
    if timings:
        lines += ["## Stage timings", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(lines)
    atomic_write_text(os.path.join(out_dir, "report.md"), text)
    atomic_write_json(
        os.path.join(out_dir, "results.json"),
        {
            "title": title,
            "rows": [dataclasses.asdict(r) for r in rows],
            "importance_auc": importance_auc or {},
            "timings_s": timings or {},
            "notes": list(notes),
            "examples": examples or {},
            "curves": {k: list(v) for k, v in (curves or {}).items()},
        },
    )
    return text
