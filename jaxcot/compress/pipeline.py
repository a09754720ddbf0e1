"""The compress stage: scored records -> a compressed SFT set plus statistics.

`write_compressed` is the stage (`jaxcot compress` and `jaxcot run` call it); `compress_records`
does the work in memory:

    from jaxcot.compress import compress_records
    out = compress_records(records, "gogi-ads", gamma=0.5, beta=0.2)
    out.examples   # list of {"id", "prompt", "completion", "method", "gamma", "kept", "total"}
    out.summary    # retained ratio, tokens before/after, dropped token kinds, filter counts
    out.details    # per record: keep mask (or pruned steps), compressed chain, gamma

Methods (importance source = a field of the record's `scores`, or "random"):

| method        | rule   | importance | prompt format |
|---------------|--------|------------|---------------|
| original      | none   | -          | plain         |
| gogi-ads      | ADS    | gogi       | plain         |
| gogi-static   | static | gogi       | plain         |
| tokenskip     | static | self_info  | tokenskip     |
| selfinfo-ads  | ADS    | self_info  | plain         |
| random        | static | random     | plain         |
| step-entropy  | step   | entropy    | plain         |

`rule`, `importance` and `format` can be overridden (e.g. random importance under ADS, or
`importance=llmlingua2` when the scorer stored that field).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcot.compress import builders, rebuild, rules
from jaxcot.compress.config import DEFAULT_GAMMA, CompressConfig, check_knobs
from jaxcot.generate.traces import skip_summary, unusable
from jaxcot.io import DataError, atomic_write_json, atomic_write_jsonl
from jaxcot.logs import get_logger, progress as progress_bar
from jaxcot.provenance import Fingerprint, claimed, content_digest
from jaxcot.text.grading import get_grader


@dataclasses.dataclass
class Compressed:
    """One record's compression: keep [C] bool over chain tokens (tokens of kept steps for the step
    rule), pruned steps [S] (step rule only), the compressed chain text and its gamma."""

    id: str
    keep: np.ndarray
    text: str
    gamma: float | None
    pruned_steps: np.ndarray | None = None

    @property
    def kept(self) -> int:
        return int(self.keep.sum())

    @property
    def total(self) -> int:
        return int(self.keep.size)


@dataclasses.dataclass
class CompressOutput:
    examples: list[dict]
    summary: dict
    details: list[Compressed]


def validate_record(rec: dict, where: str, needed: Sequence[str]) -> None:
    """Raise DataError naming `where` unless rec is a usable scored record."""
    for key in ("id", "question", "chain", "answer", "scores"):
        if key not in rec:
            raise DataError(f"{where}: record has no field {key!r}")
    sc = rec["scores"]
    if not isinstance(sc, dict) or "pieces" not in sc:
        raise DataError(f"{where}: scores has no field 'pieces'")
    pieces = sc["pieces"]
    if "".join(pieces) != rec["chain"]:
        raise DataError(f"{where}: scores.pieces do not join to the chain text")
    for key in needed:
        if key not in sc:
            raise DataError(f"{where}: scores has no field {key!r}")
        arr = np.asarray(sc[key], np.float64)
        if arr.shape != (len(pieces),):
            raise DataError(f"{where}: scores.{key} has shape {arr.shape}, pieces has {len(pieces)} entries")
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{where}: scores.{key} holds a non-finite value at token "
                            f"{int(np.argmin(np.isfinite(arr)))}")
        if key == "entropy" and np.any(arr < -1e-4):
            raise DataError(f"{where}: scores.entropy is negative at token {int(np.argmin(arr))}")


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _batches(lengths: Sequence[int], batch_size: int):
    order = np.argsort(np.asarray(lengths), kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


def _pad(rows: Sequence[np.ndarray], b: int, c: int, dtype, fill=0) -> np.ndarray:
    out = np.full((b, c), fill, dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _log_vocab(rec: dict, cfg: CompressConfig, where: str) -> float:
    v = cfg.vocab_size or rec["scores"].get("vocab_size")
    if not v:
        raise DataError(f"{where}: ADS needs the vocabulary size for H/log|V|: the record's scores has no "
                        "'vocab_size'; pass vocab_size=N")
    return math.log(int(v))


def _trace_gammas(records, cfg: CompressConfig, fmt: str, rule: str) -> list[float | None]:
    if rule == "step":
        return [None] * len(records)
    if rule == "none":
        return [1.0] * len(records)
    if cfg.gamma is None and fmt == "tokenskip":
        return [builders.draw_gamma(r["id"], cfg.gammas, cfg.seed) for r in records]
    g = DEFAULT_GAMMA if cfg.gamma is None else float(cfg.gamma)
    return [g] * len(records)


def _trace_shift(records, cfg: CompressConfig) -> np.ndarray:
    """trace_beta * (mean_C H - dataset mean) / (dataset std + eps), per record: [N]."""
    if cfg.trace_beta == 0.0:
        return np.zeros(len(records))
    means = np.array([np.mean(r["scores"]["entropy"]) if r["scores"]["entropy"] else 0.0 for r in records])
    mu = np.mean(means) if cfg.dataset_entropy_mean is None else cfg.dataset_entropy_mean
    sd = np.std(means) if cfg.dataset_entropy_std is None else cfg.dataset_entropy_std
    return cfg.trace_beta * (means - mu) / (sd + cfg.eps)


def _prepare_batches(records, wheres, cfg: CompressConfig, rule: str, importance: str, gammas) -> list[dict]:
    """Padded device-ready arrays per length bucket for the token rules."""
    shift = _trace_shift(records, cfg) if rule == "ads" else np.zeros(len(records))
    base = jax.random.key(cfg.seed)
    lengths = [len(r["scores"]["pieces"]) for r in records]
    group = {"number": rebuild.number_groups, "expression": rebuild.expression_groups}.get(cfg.units)
    out = []
    for idx in _batches(lengths, cfg.batch_size):
        recs = [records[i] for i in idx]
        b, c = _pow2(len(idx), 1), _pow2(max(lengths[i] for i in idx))
        batch = {"idx": idx, "lengths": [lengths[i] for i in idx]}
        if group is not None:
            batch["units"] = [group(r["scores"]["pieces"]) for r in recs]
        batch["valid"] = _pad([np.ones(lengths[i], bool) for i in idx], b, c, bool, False)
        batch["protect"] = np.zeros((b, c), bool)
        if cfg.protect_trailing_ws:
            trailing = [rebuild.trailing_whitespace_mask(r["scores"]["pieces"]) for r in recs]
            batch["protect"] = _pad(trailing, b, c, bool, False)
        if importance == "random":
            crc = np.array([builders.stable_seed(0, r["id"])[1] for r in recs] + [0] * (b - len(idx)), np.uint32)
            keys = jax.vmap(lambda d: jax.random.fold_in(base, d))(jnp.asarray(crc))
            batch["scores"] = rules.random_scores(keys, length=c)
        else:
            batch["scores"] = _pad([np.asarray(r["scores"][importance], np.float32) for r in recs], b, c, np.float32)
        if group is not None and cfg.unit_score != "token":
            sc = np.array(batch["scores"], np.float32)
            for j, groups in enumerate(batch["units"]):
                sc[j, : len(groups)] = rebuild.unit_scores(sc[j, : len(groups)], groups, cfg.unit_score)
            batch["scores"] = sc
        batch["gamma"] = np.ones(b, np.float32)
        batch["gamma"][: len(idx)] = [gammas[i] + shift[i] for i in idx]
        if rule == "ads":
            batch["entropy"] = _pad([np.asarray(r["scores"]["entropy"], np.float32) for r in recs], b, c, np.float32)
            batch["logv"] = np.ones(b, np.float32)
            batch["logv"][: len(idx)] = [_log_vocab(records[i], cfg, wheres[i]) for i in idx]
        out.append(batch)
    return out


def _apply_token_rule(batches, n: int, cfg: CompressConfig, rule: str, offset: float, z,
                     progress=True) -> list[np.ndarray]:
    """Keep masks [C_i] per record for gamma shifted by `offset`."""
    masks: list = [None] * n
    for bt in progress_bar(iterable=batches, desc=f"compress ({rule})", unit="batch",
                           enabled=progress and len(batches) > 3):
        valid, protect, gamma = bt["valid"], bt["protect"], bt["gamma"] + np.float32(offset)
        if rule == "static":
            keep = rules.static_keep(bt["scores"], valid & ~protect, gamma, ties=cfg.ties) | (valid & protect)
        else:
            keep, _, _ = rules.ads_keep(
                bt["scores"], bt["entropy"], valid, protect, bt["logv"], gamma, cfg.beta, cfg.gamma_min,
                cfg.gamma_max, cfg.eps, cfg.n_min, cfg.n_max, cfg.window, z[0], z[1], anc=cfg.anc,
            )
        keep = np.asarray(keep)
        for j, (i, length) in enumerate(zip(bt["idx"], bt["lengths"])):
            masks[i] = keep[j, :length].copy()
            if "units" in bt:
                masks[i] = rebuild.whole_units(masks[i], bt["units"][j])
    return masks


def _token_rule(records, wheres, cfg: CompressConfig, rule: str, importance: str,
                gammas) -> tuple[list[np.ndarray], dict]:
    """Keep masks [C_i] for the token rules (ads, static), batched by length, and calibration info.

    With `calibrate` (ADS only), a common offset added to every trace's gamma is found by bisection
    so that the mean retained ratio over traces is within `calibrate_tol` of the mean target gamma
    (the N-constraint only adds tokens, so ADS alone overshoots gamma; retention is monotone in
    the offset, so bisection is sound).
    """
    z = (None, None)
    if cfg.zscore not in ("trace", "fixed"):
        raise ValueError(f"zscore must be 'trace' or 'fixed', got {cfg.zscore!r}")
    if rule == "ads" and cfg.zscore == "fixed":
        pooled = np.concatenate([np.asarray(r["scores"]["entropy"], np.float64) for r in records] + [np.zeros(0)])
        z = (np.float32(pooled.mean() if cfg.zscore_mean is None else cfg.zscore_mean),
             np.float32(pooled.std() if cfg.zscore_std is None else cfg.zscore_std))
    batches = _prepare_batches(records, wheres, cfg, rule, importance, gammas)
    masks = _apply_token_rule(batches, len(records), cfg, rule, 0.0, z)
    info: dict = {}
    if cfg.calibrate and rule == "ads" and records:
        target = float(np.mean([g for g in gammas]))
        ratio = lambda ms: float(np.mean([m.mean() if m.size else 1.0 for m in ms]))  # noqa: E731
        lo, hi, best = -1.0, 1.0, (0.0, masks, ratio(masks))
        for _ in range(cfg.calibrate_iters):
            if abs(best[2] - target) <= cfg.calibrate_tol:
                break
            mid = 0.5 * (lo + hi)
            ms = _apply_token_rule(batches, len(records), cfg, rule, mid, z, progress=False)
            r = ratio(ms)
            if abs(r - target) < abs(best[2] - target):
                best = (mid, ms, r)
            lo, hi = (lo, mid) if r > target else (mid, hi)
        info = {"gamma_offset": best[0], "uncalibrated_ratio": ratio(masks), "calibrated_ratio": best[2],
                "target": target}
        masks = best[1]
    return masks, info


def _step_rule(records, cfg: CompressConfig) -> list[tuple[np.ndarray, list, np.ndarray]]:
    """(step_ids [C], steps, prune [S]) per record for step-entropy pruning, batched."""
    split = [rebuild.split_steps(r["scores"]["pieces"], cfg.step_pattern) for r in records]
    lengths = [len(r["scores"]["pieces"]) for r in records]
    out: list = [None] * len(records)
    for idx in _batches(lengths, cfg.batch_size):
        b, c = _pow2(len(idx), 1), _pow2(max(lengths[i] for i in idx))
        s = _pow2(max(len(split[i][1]) for i in idx), 8)
        valid = _pad([np.ones(lengths[i], bool) for i in idx], b, c, bool, False)
        ids = _pad([split[i][0] for i in idx], b, c, np.int32)
        entropy = _pad([np.asarray(records[i]["scores"]["entropy"], np.float32) for i in idx], b, c, np.float32)
        eligible = np.zeros((b, s), bool)
        for j, i in enumerate(idx):
            content = [k for k, st in enumerate(split[i][1]) if st.has_content]
            lo, hi = cfg.protect_first_steps, len(content) - cfg.protect_last_steps
            eligible[j, content[lo:max(lo, hi)]] = True
        sc = rules.step_scores(entropy, ids, valid, num_steps=s, agg=cfg.step_agg)
        prune = np.asarray(rules.lowest_steps(sc, eligible, cfg.kappa))
        for j, i in enumerate(idx):
            out[i] = (split[i][0], split[i][1], prune[j, : len(split[i][1])].copy())
    return out


def _usable(records, wheres) -> tuple[list[dict], list[str], dict[str, int]]:
    """The records a training set can use (`jaxcot.generate.traces.unusable`: not truncated, with
    an answer), their labels, and the counts of those left out."""
    keep_idx, counts = [], {"truncated": 0, "no_answer": 0}
    for i, rec in enumerate(records):
        why = unusable(rec)
        if why is None:
            keep_idx.append(i)
        else:
            counts[why] += 1
    return [records[i] for i in keep_idx], [wheres[i] for i in keep_idx], counts


def _correct_only(records, wheres, grader, unverified: str) -> tuple[list[dict], list[str], dict[str, int]]:
    """The correct records, their labels, and the counts of those left out."""
    keep_idx, counts = [], {"incorrect": 0, "unverified": 0, "unverified_kept": 0}
    for i, rec in enumerate(records):
        sel, c = builders.select_correct([rec], grader=grader, unverified=unverified)
        for k, v in c.items():
            counts[k] += v
        if sel:
            keep_idx.append(i)
    return [records[i] for i in keep_idx], [wheres[i] for i in keep_idx], counts


def _compress_all(records, wheres, cfg: CompressConfig, rule: str, importance, gammas) -> tuple[list[Compressed], dict]:
    """Every record compressed by `rule`, and the calibration info (ADS with `calibrate`)."""
    details: list[Compressed] = []
    calib: dict = {}
    if rule == "step":
        for rec, g, (ids, steps, prune) in zip(records, gammas, _step_rule(records, cfg)):
            text = rebuild.rebuild_steps(rec["chain"], steps, prune, marker=cfg.skip_marker)
            keep = ~prune[ids] if len(ids) else np.zeros(0, bool)
            details.append(Compressed(str(rec["id"]), keep, text, g, prune))
    elif rule == "none":
        for rec, g in zip(records, gammas):
            keep = np.ones(len(rec["scores"]["pieces"]), bool)
            details.append(Compressed(str(rec["id"]), keep, rebuild.rebuild_tokens(rec["scores"]["pieces"], keep), g))
    else:
        masks, calib = _token_rule(records, wheres, cfg, rule, importance, gammas) if records else ([], {})
        for rec, g, keep in zip(records, gammas, masks):
            text = rebuild.rebuild_tokens(rec["scores"]["pieces"], keep, collapse_spaces=cfg.collapse_spaces)
            details.append(Compressed(str(rec["id"]), keep, text, g))
    return details, calib


def compress_records(
    records: Sequence[dict],
    method: str = "gogi-ads",
    *,
    config: CompressConfig | None = None,
    grader: Callable[[str, str], bool] | None = None,
    count_tokens: Callable[[dict], int] | None = None,
    wheres: Sequence[str] | None = None,
    **knobs: Any,
) -> CompressOutput:
    """Compress scored records by `method` and build the SFT examples.

    records: scored records (preamble format). knobs: any CompressConfig field (e.g. gamma=0.5,
    beta=0.0, anc=False, kappa=0.6). grader (answer, gold) -> bool overrides `config.grader`;
    count_tokens(example) -> int enables `max_tokens` (else built from `config.tokenizer`).
    wheres: a label per record for error messages (e.g. "file.jsonl:12").
    """
    check_knobs(knobs)
    cfg = dataclasses.replace(config or CompressConfig(), method=method, **knobs)
    rule, importance, fmt = cfg.resolved()
    wheres = list(wheres) if wheres is not None else [f"record {i}" for i in range(len(records))]
    needed = ["entropy"] if rule == "step" else ([] if importance in ("random", None) else [importance])
    if rule == "ads":
        needed = sorted(set(needed) | {"entropy"})
    for rec, where in zip(records, wheres):
        validate_record(rec, where, needed)

    n_in = len(records)
    records, wheres, filtered = _usable(records, wheres)
    if cfg.only_correct:
        records, wheres, correct = _correct_only(records, wheres, grader or get_grader(cfg.grader), cfg.unverified)
        filtered.update(correct)
    details, calib = _compress_all(records, wheres, cfg, rule, importance, _trace_gammas(records, cfg, fmt, rule))

    examples = [
        builders.make_example(
            rec, d.text, method=cfg.method, gamma=d.gamma, kept=d.kept, total=d.total, fmt=fmt, eot=cfg.eot,
            template=cfg.template, prompt_style=cfg.prompt_style, system=cfg.system, answer_sep=cfg.answer_sep,
        )
        for rec, d in zip(records, details)
    ]
    if rule == "step":
        for ex, d in zip(examples, details):
            ex["kappa"] = float(cfg.kappa)
            ex["steps_pruned"] = int(d.pruned_steps.sum())
            ex["steps"] = int(d.pruned_steps.size)
    if cfg.max_tokens is not None and count_tokens is None:
        if cfg.tokenizer is None:
            raise ValueError("max_tokens needs a tokenizer: set tokenizer=<local HF folder> or pass count_tokens")
        from transformers import AutoTokenizer

        count_tokens = builders.tokenizer_counter(AutoTokenizer.from_pretrained(cfg.tokenizer))
    examples, lcounts = builders.length_filter(
        examples, max_tokens=cfg.max_tokens, count_tokens=count_tokens, max_chain_tokens=cfg.max_chain_tokens
    )
    filtered.update({"too_long": lcounts["too_long"], "too_long_chain": lcounts["too_long_chain"]})
    written = {ex["id"] for ex in examples}
    summary = summarize(records, details, cfg, rule, importance, fmt, filtered, written, n_in)
    if calib:
        summary["calibration"] = calib
    return CompressOutput(examples, summary, details)


def summary_path(out: str) -> str:
    """Where a set's summary goes: `<out without .jsonl>.summary.json`."""
    return (out[: -len(".jsonl")] if out.endswith(".jsonl") else out) + ".summary.json"


def compressed_fingerprint(records: Sequence[dict], cfg: CompressConfig, origin: Mapping[str, Any] = ()) -> Fingerprint:
    """What a set written by `write_compressed` from these arguments records as its origin."""
    return Fingerprint.of({"compress": cfg, "scored": content_digest(records), **dict(origin)})


def write_compressed(records: Sequence[dict], out: str, cfg: CompressConfig, *,
                     grader: Callable[[str, str], bool] | None = None, wheres: Sequence[str] | None = None,
                     count_tokens: Callable[[dict], int] | None = None, origin: Mapping[str, Any] = (),
                     replace: bool = False, say=None, source: str = "records") -> CompressOutput:
    """The compress stage: `compress_records` by `cfg`, the SFT examples written to `out` and the
    summary beside it (`summary_path`), both atomically; returns the `CompressOutput`. Provenance
    as in `jaxcot.generate.write_traces` (`origin`: further settings, e.g. the grader's name). The
    records left out (truncated, without an answer, incorrect: the summary's `filtered`) are told
    to `say` (default: the log); none left to compress is a DataError naming `source` (the file)."""
    fp = compressed_fingerprint(records, cfg, origin)
    with claimed(out, fp, replace=replace, say=say):
        res = compress_records(records, cfg.method, config=cfg, grader=grader, wheres=wheres,
                               count_tokens=count_tokens)
        left_out = {k: v for k, v in res.summary["filtered"].items() if k != "unverified_kept"}
        told = skip_summary(left_out, len(records), "records")
        if any(left_out.values()):
            (say or get_logger("compress").info)(f"compress {source}: {told}")
        if not res.details:
            raise DataError(f"{source}: no record to compress ({told})")
        atomic_write_jsonl(out, res.examples)
        atomic_write_json(summary_path(out), res.summary)
    return res


def _dist(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"mean": None, "std": None, "min": None, "p10": None, "median": None, "p90": None, "max": None}
    q = np.percentile(x, [10, 50, 90])
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "p10": float(q[0]),
            "median": float(q[1]), "p90": float(q[2]), "max": float(x.max())}


def summarize(records, details, cfg, rule, importance, fmt, filtered, written, n_in) -> dict:
    """Statistics over the compressed records (before the length filter drops any example):
    retained ratio per trace, tokens before/after, and per token kind the totals and drops."""
    kinds = {k: {"total": 0, "dropped": 0} for k in rebuild.KINDS}
    for rec, d in zip(records, details):
        for piece, k in zip(rec["scores"]["pieces"], d.keep):
            kind = rebuild.piece_kind(piece)
            kinds[kind]["total"] += 1
            kinds[kind]["dropped"] += int(not k)
    n_dropped = sum(v["dropped"] for v in kinds.values())
    for v in kinds.values():
        v["retention"] = (1 - v["dropped"] / v["total"]) if v["total"] else None
        v["share_of_dropped"] = (v["dropped"] / n_dropped) if n_dropped else 0.0
    before = np.array([d.total for d in details], np.float64)
    after = np.array([d.kept for d in details], np.float64)
    ratio = np.where(before > 0, after / np.maximum(before, 1), 1.0)  # an empty chain loses nothing
    gam = [d.gamma for d in details if d.gamma is not None]
    out = {
        "method": cfg.method,
        "rule": rule,
        "importance": importance,
        "format": fmt,
        "config": dataclasses.asdict(cfg),
        "records_in": n_in,
        "compressed": len(details),
        "written": len(written),
        "filtered": filtered,
        "retained_ratio": _dist(ratio),
        "retained_ratio_token_weighted": float(after.sum() / before.sum()) if before.sum() else None,
        "tokens_before": {"total": int(before.sum()), **_dist(before)},
        "tokens_after": {"total": int(after.sum()), **_dist(after)},
        "dropped_kinds": kinds,
    }
    if gam:
        vals, counts = np.unique(np.round(np.asarray(gam), 6), return_counts=True)
        out["gamma_counts"] = {format(float(v), "g"): int(c) for v, c in zip(vals, counts)}
    if rule == "step":
        pr = [d.pruned_steps for d in details]
        out["steps"] = {"total": int(sum(p.size for p in pr)), "pruned": int(sum(p.sum() for p in pr))}
    return out


def format_table(summary: dict) -> str:
    """A plain-text table of the summary for the console."""
    r, tb, ta = summary["retained_ratio"], summary["tokens_before"], summary["tokens_after"]
    f = lambda x, p=3: "-" if x is None else f"{x:.{p}f}"  # noqa: E731
    lines = [
        f"method {summary['method']} (rule {summary['rule']}, importance {summary['importance']}, "
        f"format {summary['format']}): {summary['records_in']} records in, {summary['compressed']} compressed, "
        f"{summary['written']} written",
        ("filtered: " + ", ".join(f"{k} {v}" for k, v in summary["filtered"].items())
         if summary["filtered"] else "filtered: none"),
        f"retained ratio: mean {f(r['mean'])}  std {f(r['std'])}  min {f(r['min'])}  p10 {f(r['p10'])}  "
        f"median {f(r['median'])}  p90 {f(r['p90'])}  max {f(r['max'])}",
        f"chain tokens: before {tb['total']} (mean {f(tb['mean'], 1)}), after {ta['total']} (mean {f(ta['mean'], 1)})",
    ]
    if "gamma_counts" in summary:
        lines.append("gamma: " + ", ".join(f"{k}: {v}" for k, v in summary["gamma_counts"].items()))
    if "steps" in summary:
        lines.append(f"steps: {summary['steps']['pruned']} of {summary['steps']['total']} replaced by the marker")
    lines += ["", f"{'kind':<12}{'tokens':>9}{'dropped':>9}{'retention':>11}{'% of drops':>12}"]
    for kind, v in summary["dropped_kinds"].items():
        if v["total"]:
            lines.append(f"{kind:<12}{v['total']:>9}{v['dropped']:>9}{f(v['retention']):>11}"
                         f"{100 * v['share_of_dropped']:>11.1f}%")
    return "\n".join(lines)
