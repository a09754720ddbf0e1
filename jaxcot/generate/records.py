"""Dataset side of `jaxcot generate`: its config, question sources, and trace records."""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Iterator

from jaxcot.generate.format import PromptConfig, extract_gold, split_chain_answer
from jaxcot.io import DataError, iter_jsonl


@dataclasses.dataclass
class GenerateConfig:
    """Settings of a generation run (YAML: configs/generate.yaml; CLI flags override them).

    Data: each record's question is `question_field`; `answer_field` (if present in a record)
    becomes `gold` via `extract_gold`; the record id is `id_field`, else the record's "id" or
    "idx", else its position. `split` is used for `datasets` hub-style sources.
    """

    prompt: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    max_new_tokens: int = 512
    batch_size: int = 8
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = dataclasses.field(default_factory=list)
    answer_marker: str = "The answer is"
    question_field: str = "question"
    answer_field: str | None = "answer"
    id_field: str | None = None
    split: str = "test"
    limit: int | None = None
    dtype: str = "float32"
    min_bucket: int = 16
    save_token_stats: bool = False


def _record_id(rec: dict, pos: int, id_field: str | None, where: str) -> str:
    if id_field:
        if id_field not in rec:
            raise DataError(f"{where}: record has no id field {id_field!r}")
        return str(rec[id_field])
    for key in ("id", "idx"):
        if key in rec:
            return str(rec[key])
    return str(pos)


def load_questions(source: str, cfg: GenerateConfig) -> list[dict]:
    """[{id, question, gold?}] from a JSONL file, a `datasets` folder (save_to_disk), a
    .parquet/.csv/.json file, or ``hf:NAME[:CONFIG]`` (datasets.load_dataset, split `cfg.split`)."""
    out: list[dict] = []
    seen: set[str] = set()
    for pos, (where, rec) in enumerate(_iter_source(source, cfg)):
        if cfg.limit is not None and pos >= cfg.limit:
            break
        if cfg.question_field not in rec:
            raise DataError(f"{where}: record has no question field {cfg.question_field!r}")
        rid = _record_id(rec, pos, cfg.id_field, where)
        if rid in seen:
            raise DataError(f"{where}: duplicate record id {rid!r}")
        seen.add(rid)
        item = {"id": rid, "question": str(rec[cfg.question_field])}
        if cfg.answer_field and rec.get(cfg.answer_field) is not None:
            item["gold"] = extract_gold(rec[cfg.answer_field])
        out.append(item)
    return out


def _iter_source(source: str, cfg: GenerateConfig) -> Iterator[tuple[str, dict]]:
    if source.endswith(".jsonl") and os.path.isfile(source):
        for lineno, rec in iter_jsonl(source):
            yield f"{source}:{lineno}", rec
        return
    import datasets

    if os.path.isdir(source):
        ds = datasets.load_from_disk(source)
        if isinstance(ds, datasets.DatasetDict):
            if cfg.split not in ds:
                raise DataError(f"{source}: no split {cfg.split!r} (has {sorted(ds)})")
            ds = ds[cfg.split]
    elif os.path.isfile(source):
        ext = os.path.splitext(source)[1].lstrip(".")
        kind = {"json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
        if kind is None:
            raise DataError(f"{source}: unsupported data file type .{ext} (jsonl, json, parquet, csv)")
        ds = datasets.load_dataset(kind, data_files=source, split="train")
    elif source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        ds = datasets.load_dataset(name, config or None, split=cfg.split)
    else:
        raise FileNotFoundError(f"{source}: no such data file or folder (or use hf:NAME[:CONFIG])")
    for i, rec in enumerate(ds):
        yield f"{source}[{i}]", dict(rec)


def row_seed(record_id: str) -> int:
    """A stable per-record seed (sampling does not depend on batching or on resuming)."""
    return zlib.crc32(record_id.encode("utf-8"))


def trace_record(item: dict, completion, cfg: GenerateConfig) -> dict:
    """The trace record (see the shared formats): id, question, chain, answer, gold?, plus
    `finish_reason`, `num_tokens` and, with `save_token_stats`, token ids / logprobs / entropy."""
    text = completion.text.strip()
    chain, answer = split_chain_answer(text, cfg.answer_marker)
    rec = {"id": item["id"], "question": item["question"], "chain": chain, "answer": answer}
    if "gold" in item:
        rec["gold"] = item["gold"]
    rec["finish_reason"] = completion.finish_reason
    rec["num_tokens"] = len(completion.token_ids)
    if cfg.save_token_stats:
        rec["token_ids"] = completion.token_ids
        rec["logprobs"] = completion.logprobs
        rec["entropy"] = completion.entropy
    return rec


__all__ = ["GenerateConfig", "load_questions", "row_seed", "trace_record"]
