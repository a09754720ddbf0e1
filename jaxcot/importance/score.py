"""Score trace records: GoGI, entropy and self-information per chain token ("Scored records").

`score_traces(model, tokenizer, records)` is the notebook entry point; `iter_scored` streams the
same records as batches finish (the CLI writes them resumably); `layer_probe` reports per-layer
GoGI statistics so a user can choose the layer.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from jaxcot.importance.batching import iter_batches, model_mesh
from jaxcot.importance.encode import EncodedTrace, encode_record
from jaxcot.importance.gogi import gogi_scores, normalize_layers

_DIGIT = re.compile(r"\d")


@dataclasses.dataclass(frozen=True)
class TraceScores:
    """Per chain token, float32 [n]: gogi, entropy (nats), self_info; per_layer [nL, n] or None."""

    gogi: np.ndarray
    entropy: np.ndarray
    self_info: np.ndarray
    per_layer: np.ndarray | None = None


def score_encoded(
    model, encoded: Sequence[EncodedTrace], *, layers=None, norm: str = "l1", batch_size: int = 8,
    mesh=None, per_layer: bool = False, progress=None,
) -> Iterator[tuple[int, TraceScores]]:
    """Yield (index into `encoded`, its `TraceScores`) as each length-bucketed batch finishes.

    mesh: where the batch is sharded (default: the mesh holding the model's parameters).
    progress: an optional tqdm bar, advanced by each trace's token count.
    """
    layers = normalize_layers(layers, model.config.num_layers)
    mesh = mesh if mesh is not None else model_mesh(model)
    for batch in iter_batches(encoded, batch_size, mesh):
        arrays = batch.on(mesh)
        out = gogi_scores(model, **arrays, layers=layers, norm=norm, max_answer=batch.max_answer,
                          per_layer=per_layer)
        gogi, ent, si = (np.asarray(x) for x in (out.gogi, out.entropy, out.self_info))
        each = np.asarray(out.per_layer) if per_layer else None
        for r, i in enumerate(batch.index):
            c = encoded[i].chain
            yield i, TraceScores(gogi[r, c], ent[r, c], si[r, c], None if each is None else each[:, r, c])
            if progress is not None:
                progress.update(encoded[i].length)


def scored_record(record: dict[str, Any], enc: EncodedTrace, scores: TraceScores, layers: tuple[int, ...],
                  norm: str, extra: dict[str, Sequence[float]] | None = None, *,
                  vocab_size: int, goal: str = "answer") -> dict[str, Any]:
    """The trace record plus ``scores`` over the chain tokens (the shared Scored-record format).

    ``layer`` is an int, or the list of layers when several were averaged; ``goal`` the answer
    span differentiated ("answer" or "value", see `encode_trace`); `extra` adds further
    per-token score lists (e.g. ``llmlingua``). ``vocab_size`` (|V| of the entropy) lets ADS
    normalise entropy by log|V|."""
    s = {
        "layer": layers[0] if len(layers) == 1 else list(layers),
        "norm": norm,
        "goal": goal,
        "vocab_size": int(vocab_size),
        "token_ids": [int(t) for t in enc.token_ids[enc.chain]],
        "pieces": list(enc.pieces),
        "gogi": [float(x) for x in scores.gogi],
        "entropy": [float(x) for x in scores.entropy],
        "self_info": [float(x) for x in scores.self_info],
    }
    for key, values in (extra or {}).items():
        s[key] = [float(x) for x in values]
    return {**record, "scores": s}


def iter_scored(
    model, tokenizer, records: Sequence[dict[str, Any]], *, layers=None, norm: str = "l1",
    batch_size: int = 8, sep: str = "", prompt=None, mesh=None, llmlingua=None,
    progress: bool = True, where: str = "records", goal: str = "answer",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index into `records`, scored record), in the order their batches finish.

    records: trace records (question, chain, answer, id). sep: text between chain and answer
    (see `encode`; generation's traces need ""). prompt: the `PromptConfig` generation used.
    llmlingua: an optional `LLMLinguaScorer`; its keep-probabilities are added as
    ``scores["llmlingua"]``. goal: "answer" (every answer token, METHOD.md) or "value" (only the
    answer's value tokens; see `jaxcot.importance.encode.encode_trace`).
    """
    from tqdm.auto import tqdm

    layers = normalize_layers(layers, model.config.num_layers)
    encoded = [encode_record(tokenizer, r, sep=sep, prompt=prompt, where=f"{where}[{r.get('id', i)}]", goal=goal)
               for i, r in enumerate(records)]
    bar = tqdm(total=sum(e.length for e in encoded), unit="tok", desc="score", disable=not progress)
    try:
        for i, sc in score_encoded(model, encoded, layers=layers, norm=norm, batch_size=batch_size,
                                   mesh=mesh, progress=bar):
            extra = None
            if llmlingua is not None:
                extra = {"llmlingua": llmlingua.token_scores(records[i]["chain"], encoded[i].pieces)}
            yield i, scored_record(records[i], encoded[i], sc, layers, norm, extra,
                                  vocab_size=model.config.vocab_size, goal=goal)
    finally:
        bar.close()


def score_traces(model, tokenizer, records: Iterable[dict[str, Any]], **kw) -> list[dict[str, Any]]:
    """Scored records in input order; keyword arguments as for `iter_scored`.

    Example: ``score_traces(load_model(p), load_tokenizer(p), read_jsonl("traces.jsonl"))``.
    """
    records = list(records)
    out: list[dict[str, Any]] = [{}] * len(records)
    for i, rec in iter_scored(model, tokenizer, records, **kw):
        out[i] = rec
    return out


def layer_probe(
    model, tokenizer, records: Sequence[dict[str, Any]], *, norm: str = "l1", batch_size: int = 8,
    sep: str = "", prompt=None, mesh=None, goal: str = "answer",
) -> list[dict[str, float]]:
    """Per-layer GoGI statistics over the chain tokens of `records`, layers 0..L in one backward.

    Returns one dict per layer: layer, mean, median, max, and num_share (the share of GoGI mass
    on tokens whose piece holds a digit).
    """
    n_layers = model.config.num_layers
    encoded = [encode_record(tokenizer, r, sep=sep, prompt=prompt, where=f"probe[{i}]", goal=goal)
               for i, r in enumerate(records)]
    per: list[np.ndarray] = []
    digit: list[np.ndarray] = []
    for i, sc in score_encoded(model, encoded, layers=range(n_layers + 1), norm=norm, batch_size=batch_size,
                               mesh=mesh, per_layer=True):
        per.append(sc.per_layer)
        digit.append(np.array([bool(_DIGIT.search(p)) for p in encoded[i].pieces], bool))
    if not per:
        raise ValueError("layer probe: no traces to score")
    allg = np.concatenate(per, axis=1)  # [L+1, N]
    isnum = np.concatenate(digit)
    rows = []
    for l in range(n_layers + 1):
        g = allg[l]
        total = float(g.sum())
        rows.append({
            "layer": l, "mean": float(g.mean()) if g.size else 0.0, "median": float(np.median(g)) if g.size else 0.0,
            "max": float(g.max(initial=0.0)), "num_share": float(g[isnum].sum() / total) if total > 0 else 0.0,
        })
    return rows


def format_probe(rows: Sequence[dict[str, float]], default: int) -> str:
    """A plain-text table of `layer_probe` rows; the default layer is starred."""
    lines = [f"{'layer':>6} {'mean':>11} {'median':>11} {'max':>11} {'num_share':>9}"]
    for r in rows:
        star = "*" if r["layer"] == default else " "
        lines.append(f"{r['layer']:>5}{star} {r['mean']:>11.4g} {r['median']:>11.4g} {r['max']:>11.4g} {r['num_share']:>9.3f}")
    return "\n".join(lines)


__all__ = ["TraceScores", "format_probe", "iter_scored", "layer_probe", "score_encoded", "score_traces", "scored_record"]
