"""The score stage: per chain token of trace records, the fields of the scorers the config names
(`jaxcot.importance.scorers`: GoGI, entropy and self-information by default).

`write_scores` is the stage (`jaxcot score` and `jaxcot run` call it); `score_traces(model,
tokenizer, records)` is the notebook entry point; `iter_scored` streams scored records as batches
finish; `layer_probe` reports per-layer GoGI statistics so a user can choose the layer. Every
function takes its settings as one `ScoreConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from jaxcot.distributed import Share, part_path
from jaxcot.generate.traces import skip_summary
from jaxcot.importance.batching import iter_batches, model_mesh, plan_batches
from jaxcot.importance.config import ScoreConfig, select_traces
from jaxcot.importance.encode import EncodedTrace, encode_record
from jaxcot.importance.gogi import gogi_scores, normalize_layers
from jaxcot.importance.scorers import ScoreBatch, run_scorers
from jaxcot.io import DataError, ResumableJsonl, read_jsonl
from jaxcot.logs import get_logger, progress as progress_bar
from jaxcot.provenance import Fingerprint, claimed, content_digest
from jaxcot.sharding import batch_shards

_DIGIT = re.compile(r"\d")


@dataclasses.dataclass(frozen=True)
class TraceScores:
    """Per chain token, float32 [n]: gogi, entropy (nats), self_info; per_layer [nL, n] or None."""

    gogi: np.ndarray
    entropy: np.ndarray
    self_info: np.ndarray
    per_layer: np.ndarray | None = None


def _gogi_batch(model, batch, mesh, layers, norm: str, per_layer: bool, remat: bool) -> list[TraceScores]:
    """The GoGI pass over one `Batch`: a `TraceScores` per real row, in `batch.index` order."""
    arrays = batch.on(mesh)
    with jax.set_mesh(mesh) if mesh.shape["fsdp"] > 1 else contextlib.nullcontext():
        out = gogi_scores(model, **arrays, layers=layers, norm=norm, max_answer=batch.max_answer,
                          per_layer=per_layer, remat=remat)
    gogi, ent, si = (np.asarray(x) for x in (out.gogi, out.entropy, out.self_info))
    each = np.asarray(out.per_layer) if per_layer else None
    return [TraceScores(gogi[r], ent[r], si[r], None if each is None else each[:, r]) for r in range(len(batch.index))]


def _chain_of(scores: TraceScores, chain: slice) -> TraceScores:
    per = None if scores.per_layer is None else scores.per_layer[:, chain]
    return TraceScores(scores.gogi[chain], scores.entropy[chain], scores.self_info[chain], per)


def score_encoded(
    model, encoded: Sequence[EncodedTrace], *, layers=None, norm: str = "l1", batch_size: int = 8,
    mesh=None, per_layer: bool = False, progress=None, remat: bool = False,
) -> Iterator[tuple[int, TraceScores]]:
    """Yield (index into `encoded`, its `TraceScores`) as each length-bucketed batch finishes.

    mesh: where the batch is sharded (default: the mesh holding the model's parameters); a mesh
    with fsdp > 1 is set as the current one, so the residual stream keeps each device's rows.
    remat: each block recomputed in the backward (`gogi_scores`).
    progress: an optional tqdm bar, advanced by each trace's token count.
    """
    layers = normalize_layers(layers, model.config.num_layers)
    mesh = mesh if mesh is not None else model_mesh(model)
    for batch in iter_batches(encoded, batch_size, mesh):
        rows = _gogi_batch(model, batch, mesh, layers, norm, per_layer, remat)
        for i, sc in zip(batch.index, rows):
            yield i, _chain_of(sc, encoded[i].chain)
            if progress is not None:
                progress.update(encoded[i].length)


def scored_record(record: dict[str, Any], enc: EncodedTrace, fields: Mapping[str, Sequence[float]],
                  layers: tuple[int, ...], norm: str, *, vocab_size: int, goal: str = "answer") -> dict[str, Any]:
    """The trace record plus ``scores`` over the chain tokens (the shared Scored-record format):
    the settings, the chain's token ids and pieces, then each scorer's field [n] (`fields`, in
    the order the scorers ran).

    ``layer`` is an int, or the list of layers when several were averaged; ``goal`` the answer
    span differentiated ("answer" or "value", see `encode_trace`). ``vocab_size`` (|V| of the
    entropy) lets ADS normalise entropy by log|V|."""
    s = {
        "layer": layers[0] if len(layers) == 1 else list(layers),
        "norm": norm,
        "goal": goal,
        "vocab_size": int(vocab_size),
        "token_ids": [int(t) for t in enc.token_ids[enc.chain]],
        "pieces": list(enc.pieces),
        **{k: [float(x) for x in v] for k, v in fields.items()},
    }
    return {**record, "scores": s}


def _encode_all(tokenizer, records: Sequence[dict[str, Any]], cfg: ScoreConfig, where: str) -> list[EncodedTrace]:
    return [encode_record(tokenizer, r, sep=cfg.sep, prompt=cfg.prompt, where=f"{where}[{r.get('id', i)}]",
                          goal=cfg.goal) for i, r in enumerate(records)]


def _check_context(encoded: Sequence[EncodedTrace], records, context: int, where: str) -> None:
    """DataError naming the first trace (prompt, chain and answer) longer than the model's context."""
    long = [i for i, e in enumerate(encoded) if e.length > context]
    if long:
        i = long[0]
        raise DataError(f"{where}[{records[i].get('id', i)}]: the trace has {encoded[i].length} tokens, more than the "
                        f"model's context of {context} positions ({len(long)} traces too long); leave them out")


def iter_scored(
    model, tokenizer, records: Sequence[dict[str, Any]], cfg: ScoreConfig = ScoreConfig(), *, mesh=None,
    progress: bool = True, where: str = "records",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index into `records`, scored record), in the order their batches finish.

    records: trace records (question, chain, answer, id); each batch goes through the scorers
    `cfg.scorers` names (`jaxcot.importance.scorers`). `where` names the records in errors.
    """
    layers = normalize_layers(cfg.layers, model.config.num_layers)
    encoded = _encode_all(tokenizer, records, cfg, where)
    _check_context(encoded, records, model.config.max_position_embeddings, where)
    mesh = mesh if mesh is not None else model_mesh(model)
    session: dict = {}
    bar = progress_bar(sum(e.length for e in encoded), unit="tok", desc="score", enabled=progress)
    try:
        for batch in iter_batches(encoded, cfg.batch_size, mesh):
            index = list(batch.index)
            sb = ScoreBatch(
                records=[records[i] for i in index], encoded=[encoded[i] for i in index], arrays=batch,
                model=model, tokenizer=tokenizer, cfg=cfg, mesh=mesh, session=session,
                gogi_pass=lambda batch=batch, index=index: [
                    _chain_of(sc, encoded[i].chain)
                    for i, sc in zip(index, _gogi_batch(model, batch, mesh, layers, cfg.norm, False, cfg.remat))],
            )
            for i, fields in zip(index, run_scorers(cfg.scorers, sb)):
                yield i, scored_record(records[i], encoded[i], fields, layers, cfg.norm,
                                       vocab_size=model.config.vocab_size, goal=cfg.goal)
                bar.update(encoded[i].length)
    finally:
        bar.close()


def score_traces(model, tokenizer, records: Iterable[dict[str, Any]], cfg: ScoreConfig = ScoreConfig(),
                 **kw) -> list[dict[str, Any]]:
    """Scored records in input order; keyword arguments as for `iter_scored`.

    Example: ``score_traces(load_model(p), load_tokenizer(p), read_jsonl("traces.jsonl"))``.
    """
    records = list(records)
    out: list[dict[str, Any]] = [{}] * len(records)
    for i, rec in iter_scored(model, tokenizer, records, cfg, **kw):
        out[i] = rec
    return out


def scores_fingerprint(traces: Sequence[dict[str, Any]], cfg: ScoreConfig, origin: Mapping[str, Any] = (),
                       inputs: Mapping[str, str] = ()) -> Fingerprint:
    """What a scored file written by `write_scores` from these arguments records as its origin."""
    picked, _ = select_traces(traces, cfg)
    side = {"llmlingua": cfg.llmlingua if "llmlingua" in cfg.scorers else None,
            "reference": cfg.options.get("reference", {}).get("model") if "reference" in cfg.scorers else None}
    return Fingerprint.of({"score": cfg.settings(), "traces": content_digest(picked), **dict(origin)},
                          {**dict(inputs), **{k: v for k, v in side.items() if v}})


def write_scores(traces: Sequence[dict[str, Any]], out: str, cfg: ScoreConfig, model_and_tokenizer, *,
                 origin: Mapping[str, Any] = (), inputs: Mapping[str, str] = (),
                 replace: bool = False, say=None, where: str = "traces", progress: bool = True,
                 mesh=None, share: Share = Share()) -> list[dict[str, Any]]:
    """The score stage: one scored record per trace `cfg` selects (`ScoreConfig.skip_reason`) to
    `out`, resumably (`ResumableJsonl`), and all of them returned. The traces left out are counted
    and told to `say` (default: the log); none left is a DataError naming `where` (the file).

    model_and_tokenizer: a (model, tokenizer) pair, or a zero-argument callable returning one,
    called only when there is work (so a finished output loads no model). Provenance as in
    `write_traces`: `origin` names the model, `inputs` the files hashed (the model, and the
    LLMLingua-2 checkpoint when its scorer runs).
    share: this process's part of a multi-process run (`jaxcot.distributed`): only its batches
    are scored, into `part_path(out, share)`, and only they are returned.
    """
    todo_all, skipped = select_traces(traces, cfg)
    if skipped:
        (say or get_logger("score").info)(f"score {where}: {skip_summary(skipped, len(traces))}")
    if not todo_all:
        raise DataError(f"{where}: no trace to score ({skip_summary(skipped, len(traces))})")
    fp = scores_fingerprint(traces, cfg, origin, inputs)
    if share.count > 1:
        model_and_tokenizer = model_and_tokenizer() if callable(model_and_tokenizer) else model_and_tokenizer
        todo_all = _own_traces(*model_and_tokenizer, todo_all, cfg, mesh, share, where)
        out = part_path(out, share)
    with claimed(out, fp, replace=replace, say=say), ResumableJsonl(out, ids=[t["id"] for t in todo_all]) as writer:
        pending = set(writer.pending)
        todo = [t for t in todo_all if t["id"] in pending]
        if todo:
            pair = model_and_tokenizer() if callable(model_and_tokenizer) else model_and_tokenizer
            for _, rec in iter_scored(*pair, todo, cfg, mesh=mesh, progress=progress, where=where):
                writer.write(rec)
    return read_jsonl(out)


def _own_traces(model, tokenizer, traces: Sequence[dict], cfg: ScoreConfig, mesh, share: Share,
                where: str) -> list[dict]:
    """The traces of `share`'s batches, as `score_encoded` batches the whole of `traces`."""
    mesh = mesh if mesh is not None else model_mesh(model)
    lengths = [e.length for e in _encode_all(tokenizer, traces, cfg, where)]
    plan = plan_batches(lengths, cfg.batch_size, batch_shards(mesh))
    return [traces[i] for _, batch in share.take(plan) for i in batch]


def layer_probe(model, tokenizer, records: Sequence[dict[str, Any]], cfg: ScoreConfig = ScoreConfig(), *,
                mesh=None) -> list[dict[str, float]]:
    """Per-layer GoGI statistics over the chain tokens of `records`, layers 0..L in one backward
    (`cfg.layers` is ignored).

    Returns one dict per layer: layer, mean, median, max, and num_share (the share of GoGI mass
    on tokens whose piece holds a digit).
    """
    n_layers = model.config.num_layers
    encoded = _encode_all(tokenizer, records, cfg, "probe")
    per: list[np.ndarray] = []
    digit: list[np.ndarray] = []
    for i, sc in score_encoded(model, encoded, layers=range(n_layers + 1), norm=cfg.norm,
                               batch_size=cfg.batch_size, mesh=mesh, per_layer=True):
        per.append(sc.per_layer)
        digit.append(np.array([bool(_DIGIT.search(p)) for p in encoded[i].pieces], bool))
    if not per:
        raise ValueError("layer probe: no traces to score")
    allg = np.concatenate(per, axis=1)  # [L+1, N]
    isnum = np.concatenate(digit)
    rows = []
    for layer in range(n_layers + 1):
        g = allg[layer]
        total = float(g.sum())
        rows.append({
            "layer": layer, "mean": float(g.mean()) if g.size else 0.0,
            "median": float(np.median(g)) if g.size else 0.0, "max": float(g.max(initial=0.0)),
            "num_share": float(g[isnum].sum() / total) if total > 0 else 0.0,
        })
    return rows


def format_probe(rows: Sequence[dict[str, float]], default: int) -> str:
    """A plain-text table of `layer_probe` rows; the default layer is starred."""
    lines = [f"{'layer':>6} {'mean':>11} {'median':>11} {'max':>11} {'num_share':>9}"]
    for r in rows:
        star = "*" if r["layer"] == default else " "
        lines.append(f"{r['layer']:>5}{star} {r['mean']:>11.4g} {r['median']:>11.4g} {r['max']:>11.4g} "
                     f"{r['num_share']:>9.3f}")
    return "\n".join(lines)


__all__ = ["ScoreConfig", "TraceScores", "format_probe", "iter_scored", "layer_probe", "score_encoded",
           "score_traces", "scored_record", "scores_fingerprint", "select_traces", "write_scores"]
