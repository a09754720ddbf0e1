"""The compress stage: scored records -> a compressed SFT set plus statistics.

`write_compressed` is the stage (`jaxcot compress` and `jaxcot run` call it); `compress_records`
does the work in memory:

    from jaxcot.compress import compress_records
    out = compress_records(records, "gogi-ads", gamma=0.5, ads={"beta": 0.2})
    out.examples   # list of {"id", "prompt", "completion", "method", "gamma", "kept", "total"}
    out.summary    # retained ratio, tokens before/after, dropped token kinds, filter counts
    out.details    # per record: keep mask, compressed chain, gamma

Methods (rule: `jaxcot.compress.registry.RULES`; importance: a field of the record's `scores`,
or "random"):

| method        | rule     | importance | prompt format |
|---------------|----------|------------|---------------|
| original      | original | -          | plain         |
| gogi-ads      | ads      | gogi       | plain         |
| gogi-static   | static   | gogi       | plain         |
| tokenskip     | static   | self_info  | tokenskip     |
| selfinfo-ads  | ads      | self_info  | plain         |
| random        | random   | -          | plain         |
| step-entropy  | step     | entropy    | plain         |

`rule`, `importance` and `format` can be overridden (e.g. random importance under ADS, a field
a scorer of your own stored, or a rule of your own: `rule="my_pkg.rules:mine"`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxcot.compress import builders, rebuild
from jaxcot.compress.config import DEFAULT_GAMMA, CompressConfig
from jaxcot.compress.registry import Chain, Decision, Rule, get_rule
from jaxcot.config import deep_merge, from_dict
from jaxcot.generate.traces import skip_summary, unusable
from jaxcot.importance.scorers import NOT_SCORES, random_scores
from jaxcot.io import DataError, atomic_write_json, atomic_write_jsonl
from jaxcot.logs import get_logger
from jaxcot.provenance import Fingerprint, claimed, content_digest
from jaxcot.text.grading import get_grader


@dataclasses.dataclass
class Compressed:
    """One record's compression: keep [C] bool over chain tokens (tokens of kept steps for the step
    rule), the compressed chain text, its gamma, and the rule's `Decision.detail` (the step
    rule: pruned [S] bool per step)."""

    id: str
    keep: np.ndarray
    text: str
    gamma: float | None
    detail: Any = None

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


def _trace_gammas(records, cfg: CompressConfig, fmt: str, rule: Rule) -> list[float | None]:
    if not rule.uses_gamma:
        return [rule.fixed_gamma] * len(records)
    if cfg.gamma is None and fmt == "tokenskip":
        return [builders.draw_gamma(r["id"], cfg.builder.gammas, cfg.seed) for r in records]
    g = DEFAULT_GAMMA if cfg.gamma is None else float(cfg.gamma)
    return [g] * len(records)


def _importance(rec: dict, source: str | None, seed: int) -> np.ndarray | None:
    """A record's importance [C]: its `scores` field `source`, or uniform draws for 'random'."""
    if source is None:
        return None
    if source == "random":
        return random_scores(len(rec["scores"]["pieces"]), seed, rec["id"])
    return np.asarray(rec["scores"][source], np.float32)


def _chains(records, wheres, cfg: CompressConfig, importance: str | None, gammas) -> list[Chain]:
    out = []
    for rec, where, g in zip(records, wheres, gammas):
        fields = {k: np.asarray(v, np.float32) for k, v in rec["scores"].items() if k not in NOT_SCORES}
        out.append(Chain(str(rec["id"]), rec["scores"]["pieces"], _importance(rec, importance, cfg.seed), fields, g,
                         rec, where))
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


def _compress_all(records, wheres, cfg: CompressConfig, rule: Rule, importance, gammas) -> tuple[list[Compressed],
                                                                                               list[Decision], dict]:
    """Every record compressed by `rule`, its decisions, and the rule's statistics."""
    chains = _chains(records, wheres, cfg, importance, gammas)
    decisions, info = rule.decide(chains, cfg) if chains else ([], {})
    if len(decisions) != len(chains):
        raise ValueError(f"rule {cfg.resolved()[0]!r} decided {len(decisions)} chains of {len(chains)}")
    details = []
    for ch, d in zip(chains, decisions):
        keep = np.asarray(d.keep, bool)
        text = d.text if d.text is not None else rebuild.rebuild_tokens(
            list(ch.pieces), keep, collapse_spaces=cfg.tokens.collapse_spaces)
        details.append(Compressed(ch.id, keep, text, ch.gamma, d.detail))
    return details, decisions, info


def resolve_config(config: CompressConfig | None, method: str, knobs: Mapping[str, Any]) -> CompressConfig:
    """`config` (default: the defaults) with `method` and `knobs` laid over it: top-level fields,
    and sections as dicts (``ads={"beta": 0.2}``) or section dataclasses, merged key by key."""
    over = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in knobs.items()}
    return from_dict(CompressConfig, deep_merge(dataclasses.asdict(config or CompressConfig()),
                                                {**over, "method": method}))


def _select(records, wheres, cfg: CompressConfig, grader) -> tuple[list[dict], list[str], dict[str, int]]:
    """The records the set is built from (usable; correct with `filter.only_correct`), their
    labels, and the counts of those left out."""
    records, wheres, filtered = _usable(records, wheres)
    if cfg.filter.only_correct:
        records, wheres, correct = _correct_only(records, wheres, grader or get_grader(cfg.filter.grader),
                                                 cfg.filter.unverified)
        filtered.update(correct)
    return records, wheres, filtered


def _examples(records, details, decisions, cfg: CompressConfig, fmt: str, count_tokens) -> tuple[list[dict], dict]:
    """The SFT examples of the compressed records, past the length filter, and its counts."""
    b = cfg.builder
    examples = [
        {**builders.make_example(rec, d.text, method=cfg.method, gamma=d.gamma, kept=d.kept, total=d.total, fmt=fmt,
                                 eot=b.eot, template=b.template, prompt_style=b.prompt_style, system=b.system,
                                 answer_sep=b.answer_sep), **dec.fields}
        for rec, d, dec in zip(records, details, decisions)
    ]
    f = cfg.filter
    if f.max_tokens is not None and count_tokens is None:
        if f.tokenizer is None:
            raise ValueError("filter.max_tokens needs a tokenizer: set filter.tokenizer=<local HF folder> or pass "
                             "count_tokens")
        from transformers import AutoTokenizer

        count_tokens = builders.tokenizer_counter(AutoTokenizer.from_pretrained(f.tokenizer))
    examples, counts = builders.length_filter(examples, max_tokens=f.max_tokens, count_tokens=count_tokens,
                                              max_chain_tokens=f.max_chain_tokens)
    return examples, {"too_long": counts["too_long"], "too_long_chain": counts["too_long_chain"]}


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

    records: scored records (preamble format). knobs: CompressConfig fields and sections (e.g.
    gamma=0.5, ads={"beta": 0.0, "anc": False}, step={"kappa": 0.6}; `resolve_config`). grader
    (answer, gold) -> bool overrides `filter.grader`; count_tokens(example) -> int enables
    `filter.max_tokens` (else built from `filter.tokenizer`). wheres: a label per record for
    error messages (e.g. "file.jsonl:12").
    """
    cfg = resolve_config(config, method, knobs)
    rule_name, importance, fmt = cfg.resolved()
    rule = get_rule(rule_name)
    wheres = list(wheres) if wheres is not None else [f"record {i}" for i in range(len(records))]
    needed = sorted(set(rule.needs(cfg)) | ({importance} if importance not in ("random", None) else set()))
    for rec, where in zip(records, wheres):
        validate_record(rec, where, needed)

    n_in = len(records)
    records, wheres, filtered = _select(records, wheres, cfg, grader)
    details, decisions, info = _compress_all(records, wheres, cfg, rule, importance,
                                             _trace_gammas(records, cfg, fmt, rule))
    examples, too_long = _examples(records, details, decisions, cfg, fmt, count_tokens)
    filtered.update(too_long)
    summary = summarize(records, details, cfg, (rule_name, importance, fmt), filtered, {ex["id"] for ex in examples},
                        n_in)
    if hasattr(rule, "summary"):
        summary.update(rule.summary(decisions))
    summary.update(info)
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


def summarize(records, details, cfg, method: tuple, filtered, written, n_in) -> dict:
    """Statistics over the compressed records (before the length filter drops any example):
    retained ratio per trace, tokens before/after, and per token kind the totals and drops.
    method: (rule, importance, format) as resolved."""
    rule, importance, fmt = method
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
