"""report.html: one self-contained page per run folder (no network: inline SVG, CSS and JS).

It reads what the stages wrote (results.json, auc.json, leaderboard.json, metrics.jsonl files,
scored.jsonl, sets/*.jsonl, eval/*.json, config.yaml and the *.meta.json files) and shows the
results table, the accuracy-vs-tokens plot (hover shows the row), the importance and layer charts,
the training and GRPO curves, chosen chains with per-token heat by any scorer, each method's kept
and dropped tokens, each student's outputs side by side, and the settings and fingerprints behind
each row. Pure string building: no jax, no plotting library.

    jaxcot report runs/demo        # rebuild runs/demo/report.html
    jaxcot view runs/demo          # serve it on localhost
"""

from __future__ import annotations

import glob
import html
import json
import math
import os
from typing import Sequence

from jaxcot.eval.report import place_labels
from jaxcot.io import atomic_write_text

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
N_EXAMPLES = 3  # chains shown with their heat and every method's kept tokens
CURVE_KEYS = ("loss", "reward", "completion_tokens", "kl", "grad_norm")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1150px;padding:0 16px 40px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.hl{background:#fff3c4}
svg{background:#fff;border:1px solid #eee;margin:4px}svg text{font-size:11px;fill:#333}
.chain{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:13px;border:1px solid #eee;padding:8px}
.drop{color:#bbb;text-decoration:line-through}.kept{color:#111}.meth{margin:6px 0}.meth b{display:block}
#tip{position:absolute;display:none;background:#222;color:#fff;padding:4px 8px;border-radius:4px;font-size:12px;
pointer-events:none}.cols{display:flex;gap:8px;flex-wrap:wrap}.cols>div{flex:1;min-width:220px}
pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:320px}.fp{font-family:monospace}
"""

# Before anything else: an uncaught error is written into the page (data-errors on <html>).
TRAP_JS = ("window.addEventListener('error',function(e){var d=document.documentElement;"
           "d.setAttribute('data-errors',(d.getAttribute('data-errors')||'')+(e.message||'error')+'; ')});")

JS = """
(function(){
var tip=document.getElementById('tip');
function rows(r,on){document.querySelectorAll('tr[data-row="'+CSS.escape(r)+'"]').forEach(function(t){
  t.classList.toggle('hl',on)})}
document.querySelectorAll('.pt').forEach(function(c){
  c.addEventListener('mousemove',function(e){tip.textContent=c.getAttribute('data-tip');tip.style.display='block';
    tip.style.left=(e.pageX+12)+'px';tip.style.top=(e.pageY+12)+'px';rows(c.getAttribute('data-row'),true)});
  c.addEventListener('mouseleave',function(){tip.style.display='none';rows(c.getAttribute('data-row'),false)});
});
function heat(ex,field){
  var v=JSON.parse(document.getElementById('scores-'+ex).textContent)[field];
  var s=v.slice().sort(function(a,b){return a-b}),lo=s[0],hi=s[Math.floor(0.95*(s.length-1))];
  document.querySelectorAll('#chain-'+ex+' .tok').forEach(function(t){
    var x=v[+t.getAttribute('data-i')],a=hi>lo?Math.min(1,Math.max(0,(x-lo)/(hi-lo))):0;
    t.style.background='rgba(230,85,13,'+a.toFixed(3)+')';t.title=field+' '+x;});
}
document.querySelectorAll('select.field').forEach(function(sel){
  sel.addEventListener('change',function(){heat(sel.getAttribute('data-ex'),sel.value)});
  heat(sel.getAttribute('data-ex'),sel.value);
});
document.documentElement.setAttribute('data-ready','1');
})();
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _jsonl(path: str, limit: int | None = None, want=None) -> list[dict]:
    """Records of a JSONL file (the first `limit`; only those `want(rec)` accepts); [] if absent."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if want is None or want(rec):
                out.append(rec)
            if limit is not None and len(out) >= limit:
                break
    return out


def load_run(run_dir: str) -> dict:
    """Everything the page shows, read from the run folder (a missing file leaves its part out)."""
    p = lambda *a: os.path.join(run_dir, *a)  # noqa: E731
    results = _json(p("results.json")) or {}
    methods = [r["method"] for r in results.get("rows", [])]
    sets = {m: _jsonl(p("sets", f"{m}.jsonl"), limit=500) for m in methods if os.path.exists(p("sets", f"{m}.jsonl"))}
    ids = [ex["id"] for ex in next(iter(sets.values()), []) if "id" in ex]
    ids = [i for i in ids if all(any(ex.get("id") == i for ex in s) for s in sets.values())][:4 * N_EXAMPLES]
    scored = {r["id"]: r for r in _jsonl(p("scored.jsonl"), want=lambda r: r.get("id") in ids)}
    chosen = [i for i in ids if i in scored][:N_EXAMPLES]
    metrics = {os.path.relpath(f, run_dir): _jsonl(f)
               for f in sorted(glob.glob(p("**", "metrics.jsonl"), recursive=True))}
    metas = {os.path.relpath(f, run_dir)[:-len(".meta.json")]: _json(f)
             for f in sorted(glob.glob(p("**", "*.meta.json"), recursive=True))
             if not f.endswith(".partial.meta.json")}  # a replacement under way (jaxcot.provenance.claim)
    config = open(p("config.yaml"), encoding="utf-8").read() if os.path.exists(p("config.yaml")) else ""
    evals = {m: _json(p("eval", f"{m}.json")) or {} for m in methods}
    return dict(results=results, auc=_json(p("auc.json")) or results.get("importance_auc") or {},
                leaderboard=_json(p("leaderboard.json")), metrics={k: v for k, v in metrics.items() if v},
                metas={k: v for k, v in metas.items() if isinstance(v, dict)}, config=config, evals=evals,
                examples=[(scored[i], {m: next(ex for ex in s if ex.get("id") == i) for m, s in sets.items()})
                          for i in chosen])


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _span(vals: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(vals), max(vals)
    d = (hi - lo) or (abs(hi) or 1.0)
    return lo - pad * d, hi + pad * d


class _Axes:
    """A plot area of `w` x `h` pixels with margins, mapping data (x, y) to SVG pixels."""

    L, R, T, B = 56, 16, 24, 40

    def __init__(self, w: int, h: int, xr: tuple[float, float], yr: tuple[float, float]):
        self.w, self.h, self.xr, self.yr = w, h, xr, yr

    def x(self, v: float) -> float:
        return self.L + (v - self.xr[0]) / ((self.xr[1] - self.xr[0]) or 1) * (self.w - self.L - self.R)

    def y(self, v: float) -> float:
        return self.h - self.B - (v - self.yr[0]) / ((self.yr[1] - self.yr[0]) or 1) * (self.h - self.T - self.B)

    def frame(self, title: str, xlabel: str, ylabel: str) -> str:
        """Grid lines, tick labels, axis labels and the title."""
        out = []
        for t in _ticks(*self.xr):
            out.append(f'<line x1="{self.x(t):.1f}" x2="{self.x(t):.1f}" y1="{self.T}" y2="{self.h - self.B}" '
                       f'stroke="#eee"/><text x="{self.x(t):.1f}" y="{self.h - self.B + 14}" '
                       f'text-anchor="middle">{t:g}</text>')
        for t in _ticks(*self.yr):
            out.append(f'<line x1="{self.L}" x2="{self.w - self.R}" y1="{self.y(t):.1f}" y2="{self.y(t):.1f}" '
                       f'stroke="#eee"/><text x="{self.L - 4}" y="{self.y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        out.append(f'<rect x="{self.L}" y="{self.T}" width="{self.w - self.L - self.R}" '
                   f'height="{self.h - self.T - self.B}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{self.w / 2:.0f}" y="{self.h - 6}" text-anchor="middle">{_e(xlabel)}</text>')
        out.append(f'<text transform="translate(12,{self.h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                   f'{_e(ylabel)}</text><text x="{self.L}" y="15" style="font-weight:bold">{_e(title)}</text>')
        return "".join(out)

    def svg(self, body: str, cls: str = "") -> str:
        return (f'<svg class="{cls}" width="{self.w}" height="{self.h}" viewBox="0 0 {self.w} {self.h}" '
                f'xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def scatter_svg(rows: Sequence[dict], title: str, group: str = "") -> str:
    """Accuracy (%) against mean chain tokens, one circle per row (`data-row` "<group>:<index>": the
    row of its own benchmark's table), each with a <title> and a tooltip; labels placed without
    overlap by `place_labels`."""
    xs = [float(r["mean_cot_tokens"]) for r in rows]
    ys = [100 * float(r["accuracy"]) for r in rows]
    ax = _Axes(620, 380, _span(xs, 0.25), _span(ys + [0.0], 0.15))
    pts = [(ax.x(x), ax.y(y)) for x, y in zip(xs, ys)]
    widths = [6.3 * len(str(r["method"])) for r in rows]
    spots = place_labels([(px, -py) for px, py in pts], widths, 13, radius=6,  # (y up for place_labels)
                         bounds=(ax.L, -(ax.h - ax.B), ax.w - ax.R, -ax.T))
    body = [ax.frame(title, "mean CoT tokens", "accuracy (%)")]
    for i, (r, (px, py), (dx, dy)) in enumerate(zip(rows, pts, spots)):
        c = COLOURS[i % len(COLOURS)]
        tip = (f"{r['method']}: accuracy {100 * r['accuracy']:.1f}%, {r['mean_cot_tokens']:.1f} CoT tokens, "
               f"ActRatio {r.get('act_ratio', float('nan')):.2f}, speedup {r.get('speedup', float('nan')):.2f}x")
        body.append(f'<circle class="pt" data-row="{_e(group)}:{i}" data-tip="{_e(tip)}" '
                    f'cx="{px:.1f}" cy="{py:.1f}" r="6" '
                    f'fill="{c}"><title>{_e(tip)}</title></circle>'
                    f'<text x="{px + dx:.1f}" y="{py - dy - 3:.1f}" fill="{c}" style="fill:{c}">{_e(r["method"])}'
                    f'</text>')
    return ax.svg("".join(body), "scatter")


def lines_svg(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str,
              hline: float | None = None) -> str:
    """One polyline per series (name -> [(x, y)]), with a legend; `hline` draws a reference line."""
    pts = [p for s in series.values() for p in s if p[1] == p[1]]
    if not pts:
        return ""
    ys = [p[1] for p in pts] + ([hline] if hline is not None else [])
    ax = _Axes(540, 300, _span([p[0] for p in pts], 0.02), _span(ys))
    body = [ax.frame(title, xlabel, ylabel)]
    if hline is not None:
        body.append(f'<line x1="{ax.L}" x2="{ax.w - ax.R}" y1="{ax.y(hline):.1f}" y2="{ax.y(hline):.1f}" '
                    f'stroke="#888" stroke-dasharray="4 3"/>')
    for i, (name, s) in enumerate(series.items()):
        c = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{ax.x(x):.1f},{ax.y(y):.1f}" for x, y in s if y == y)
        body.append(f'<polyline class="curve" fill="none" stroke="{c}" stroke-width="1.6" points="{coords}">'
                    f'<title>{_e(name)}</title></polyline>')
        if len(s) < 20:
            body += [f'<circle cx="{ax.x(x):.1f}" cy="{ax.y(y):.1f}" r="2.5" fill="{c}"/>' for x, y in s if y == y]
        body.append(f'<text x="{ax.w - ax.R - 4}" y="{ax.T + 14 + 13 * i}" text-anchor="end" '
                    f'style="fill:{c}">{_e(name)}</text>')
    return ax.svg("".join(body), "lines")


def bars_svg(values: dict[str, float], title: str, ref: float = 0.5) -> str:
    """Horizontal bars on [0, 1] (ROC-AUC by importance source), best first, `ref` dashed."""
    items = sorted(values.items(), key=lambda kv: -kv[1])
    w, h, left = 540, 40 + 24 * len(items), 110
    sx = lambda v: left + v * (w - left - 50)  # noqa: E731
    body = [f'<text x="8" y="15" style="font-weight:bold">{_e(title)}</text>']
    for i, (name, v) in enumerate(items):
        y = 26 + 24 * i
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{_e(name)}</text>'
                    f'<rect class="bar" x="{left}" y="{y}" width="{sx(v) - left:.1f}" height="17" '
                    f'fill="{COLOURS[i % len(COLOURS)]}"><title>{_e(name)}: {v:.3f}</title></rect>'
                    f'<text x="{sx(v) + 4:.1f}" y="{y + 13}">{v:.3f}</text>')
    body.append(f'<line x1="{sx(ref):.1f}" x2="{sx(ref):.1f}" y1="22" y2="{h - 8}" stroke="#555" '
                f'stroke-dasharray="4 3"><title>chance ({ref})</title></line>')
    return f'<svg class="bars" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>'


def results_table(rows: Sequence[dict], group: str = "") -> str:
    """The results table, one <tr data-row="<group>:i"> per row (the plot's points of the same
    group, its benchmark, highlight theirs); a
    peak KV/row column where some row has `mean_cache_peak` (a decoder row), blank in the others."""
    cols = (("n", "n", "{:d}"), ("accuracy", "accuracy", "{:.1%}"), ("mean_cot_tokens", "CoT tokens", "{:.1f}"),
            ("act_ratio", "ActRatio", "{:.2f}"), ("latency_s", "latency (s, b=1)", "{:.4f}"),
            ("throughput_tok_s", "throughput (tok/s)", "{:.0f}"), ("speedup", "speedup", "{:.2f}x"),
            ("train_examples", "train examples", "{:d}"), ("retained", "train retained", "{:.2f}"))
    if any(r.get("mean_cache_peak") is not None for r in rows):
        cols += (("mean_cache_peak", "peak KV/row", "{:.1f}"),)
    head = "<tr><th>method</th>" + "".join(f"<th>{_e(t)}</th>" for _, t, _ in cols) + "</tr>"
    blank = {"mean_cache_peak": ""}  # a row decoded by the static loop has no peak: its cell stays empty
    body = []
    for i, r in enumerate(rows):
        cells = "".join(f"<td>{_e(f.format(r[k])) if r.get(k) is not None else blank.get(k, '-')}</td>"
                        for k, _, f in cols)
        body.append(f'<tr class="result" data-row="{_e(group)}:{i}"><td>{_e(r["method"])}</td>{cells}</tr>')
    return f'<table class="results">{head}{"".join(body)}</table>'


def align(pieces: Sequence[str], completion: str) -> list[bool]:
    """Which of the chain's `pieces` a compressed `completion` kept: each piece, in order, is kept
    where the completion continues with it (greedy; compression drops whole tokens and keeps the
    rest in order, so this recovers the mask but where a dropped piece begins the next kept one)."""
    pos, kept = 0, []
    for p in pieces:
        ok = bool(p) and completion.startswith(p, pos)
        kept.append(ok)
        pos += len(p) if ok else 0
    return kept


def _numeric_fields(scores: dict, n: int) -> list[str]:
    return [k for k, v in scores.items() if isinstance(v, list) and len(v) == n and k not in ("token_ids",)
            and all(isinstance(x, (int, float)) for x in v)]


def example_html(k: int, rec: dict, per_method: dict[str, dict]) -> str:
    """One chain: its tokens coloured by the chosen scorer (a <select>), then each method's
    training completion with the chain's tokens it dropped struck through."""
    sc = rec.get("scores") or {}
    pieces = sc.get("pieces") or []
    fields = _numeric_fields(sc, len(pieces))
    data = json.dumps({f: [round(float(x), 6) for x in sc[f]] for f in fields}).replace("</", "<\\/")
    opts = "".join(f'<option value="{_e(f)}">{_e(f)}</option>' for f in fields)
    toks = "".join(f'<span class="tok" data-i="{i}">{_e(p)}</span>' for i, p in enumerate(pieces))
    out = [f'<h3>{_e(rec.get("id", k))}</h3><p><b>question</b>: {_e(rec.get("question", ""))}</p>']
    if fields:
        out.append(f'<p>heat by <select class="field" data-ex="{k}">{opts}</select></p>'
                   f'<script type="application/json" id="scores-{k}">{data}</script>')
    out.append(f'<div class="chain" id="chain-{k}">{toks}</div>')
    for name, ex in per_method.items():
        completion = ex.get("completion", "")
        mask = align(pieces, completion)
        consumed = "".join(p for p, m in zip(pieces, mask) if m)
        rest = completion[completion.find(consumed) + len(consumed):] if consumed in completion else ""
        spans = "".join(f'<span class="{"kept" if m else "drop"}">{_e(p)}</span>' for p, m in zip(pieces, mask))
        told = ex.get("kept")
        note = f" (the set records {told}; this alignment is greedy)" if told is not None and told != sum(mask) else ""
        out.append(f'<div class="meth"><b>{_e(name)}: kept {sum(mask)} of {len(pieces)} chain tokens{note}</b>'
                   f'<div class="chain method-chain">{spans}<span class="kept">{_e(rest)}</span></div></div>')
    return "".join(out)


def outputs_html(evals: dict[str, dict], n: int = N_EXAMPLES) -> str:
    """Each student's output on the same test questions, side by side."""
    by_q: dict[str, dict[str, dict]] = {}
    for name, ev in evals.items():
        for ex in ev.get("examples") or []:
            by_q.setdefault(ex.get("question", ""), {})[name] = ex
    out = []
    for q, outs in list(by_q.items())[:n]:
        cols = "".join(f'<div><b>{_e(name)}</b> {"&#10003;" if ex.get("correct") else "&#10007;"}'
                       f'<div class="chain output">{_e(ex.get("output", ""))}</div></div>'
                       for name, ex in outs.items())
        out.append(f'<p><b>question</b>: {_e(q)}</p><div class="cols">{cols}</div>')
    return "".join(out)


def _short(v) -> str:
    s = str(v)
    return f'<span class="fp" title="{_e(s)}">{_e(s[:12])}</span>'


def provenance_html(metas: dict[str, dict], config: str) -> str:
    """config.yaml, then every output's fingerprints (its inputs' hashes) and settings."""
    rows = []
    for path, meta in metas.items():
        inputs = meta.get("inputs") or {}
        fps = ", ".join(f"{_e(k)} {_short(v)}" for k, v in inputs.items()) or "-"
        settings = json.dumps(meta.get("settings", {}), indent=1, sort_keys=True)
        rows.append(f'<tr><td>{_e(path)}</td><td>{fps}</td><td><details><summary>settings</summary>'
                    f'<pre>{_e(settings)}</pre></details></td></tr>')
    table = ("<table class=\"prov\"><tr><th>output</th><th>inputs (fingerprints)</th><th>settings</th></tr>"
             + "".join(rows) + "</table>") if rows else ""
    cfg = f"<details open><summary>config.yaml</summary><pre>{_e(config)}</pre></details>" if config else ""
    return cfg + table


def curves_html(metrics: dict[str, list[dict]]) -> str:
    """Training and GRPO curves: one chart per metric key, a line per metrics.jsonl."""
    out = []
    for key in CURVE_KEYS:
        series = {os.path.dirname(path) or path: [(float(r.get("step", i + 1)), float(r[key]))
                                                  for i, r in enumerate(recs) if isinstance(r.get(key), (int, float))]
                  for path, recs in metrics.items()}
        series = {k: v for k, v in series.items() if v}
        if series:
            out.append(lines_svg(series, key, "step", key))
    return "".join(out)


def leaderboard_html(board: dict) -> str:
    """ROC-AUC against the layer, a line per scorer (leaderboard.json of `jaxcot testbed leaderboard`)."""
    rows = board.get("rows") or []
    layers = sorted({r["layer"] for r in rows if r.get("layer") is not None})
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("auc") is None:
            continue
        pts = [(float(r["layer"]), float(r["auc"]))] if r.get("layer") is not None else \
            [(float(x), float(r["auc"])) for x in (layers or [0])]
        series.setdefault(r["scorer"], []).extend(pts)
    return lines_svg(series, "ROC-AUC by layer", "layer", "ROC-AUC", hline=0.5)


def build_html(run: dict) -> str:
    """The page from `load_run`'s dict."""
    res = run["results"]
    title = res.get("title") or "jaxcot run"
    rows = res.get("rows") or []
    parts = [f"<h1>{_e(title)}</h1>"]
    for bench in dict.fromkeys(r.get("benchmark", "") for r in rows):
        sub = [r for r in rows if r.get("benchmark", "") == bench]
        parts += [f"<h2>Results: {_e(bench)}</h2>", results_table(sub, bench),
                  scatter_svg(sub, f"accuracy vs tokens: {bench}", bench)]
    if run["auc"]:
        parts += ["<h2>Importance against ground-truth roles</h2>",
                  bars_svg({k: float(v["auc"]) for k, v in run["auc"].items()}, "ROC-AUC vs essential tokens")]
    if run["leaderboard"]:
        parts += ["<h2>Layer probe</h2>", leaderboard_html(run["leaderboard"])]
    if run["metrics"]:
        parts += ["<h2>Training and GRPO curves</h2>", curves_html(run["metrics"])]
    if run["examples"]:
        parts += ["<h2>Chains: per-token heat and each method's kept tokens</h2>",
                  "<p>Struck-through tokens: the chain's tokens a method dropped from its training completion.</p>"]
        parts += [example_html(k, rec, per) for k, (rec, per) in enumerate(run["examples"])]
    outs = outputs_html(run["evals"])
    if outs:
        parts += ["<h2>Each student's output</h2>", outs]
    if res.get("timings_s"):
        parts += ["<h2>Stage timings</h2><table>" + "".join(f"<tr><td>{_e(k)}</td><td>{v:.1f} s</td></tr>"
                                                             for k, v in res["timings_s"].items()) + "</table>"]
    if res.get("notes"):
        parts += ["<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in res["notes"]) + "</ul>"]
    parts += ["<h2>Settings and fingerprints</h2>", provenance_html(run["metas"], run["config"])]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<script>{TRAP_JS}</script><style>{CSS}</style></head><body>{''.join(parts)}"
            f'<div id="tip"></div><script>{JS}</script></body></html>\n')


def write_report_html(run_dir: str | os.PathLike) -> str:
    """Write `run_dir`/report.html (atomically) from the run folder's files; returns its path."""
    run_dir = os.fspath(run_dir)
    if not os.path.exists(os.path.join(run_dir, "results.json")):
        raise FileNotFoundError(f"{run_dir}: no results.json (is it a finished `jaxcot run` folder?)")
    path = os.path.join(run_dir, "report.html")
    atomic_write_text(path, build_html(load_run(run_dir)))
    return path


__all__ = ["align", "build_html", "load_run", "place_labels", "write_report_html"]
