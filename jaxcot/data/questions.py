"""Questions to generate chains for, from a file, a `datasets` folder or the hub.

Each question is `{"id", "question", "gold"?}`; `gold` is the reference answer's final answer
(`jaxcot.text.answers.gold_answer`); a record's own `gold` field (jaxcot's files carry one) wins.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

from jaxcot.config import check_range
from jaxcot.io import DataError, iter_jsonl
from jaxcot.text.answers import gold_answer


@dataclasses.dataclass
class QuestionFields:
    """How records become questions: the question is `question_field`; `answer_field` (when a
    record has it) gives `gold`; the id is `id_field`, else the record's "id" or "idx", else its
    position. `split` is read from `datasets` sources; `limit` keeps the first N records."""

    question_field: str = "question"
    answer_field: str | None = "answer"
    id_field: str | None = None
    split: str = "test"
    limit: int | None = None

    def __post_init__(self):
        check_range(self, "limit", 1, optional=True)


def _record_id(rec: dict, pos: int, id_field: str | None, where: str) -> str:
    if id_field:
        if id_field not in rec:
            raise DataError(f"{where}: record has no id field {id_field!r}")
        return str(rec[id_field])
    for key in ("id", "idx"):
        if key in rec:
            return str(rec[key])
    return str(pos)


def load_questions(source: str, fields: QuestionFields = QuestionFields()) -> list[dict]:
    """[{id, question, gold?}] from a JSONL file, a `datasets` folder (save_to_disk), a
    .parquet/.csv/.json file, or ``hf:NAME[:CONFIG]`` (datasets.load_dataset, split `fields.split`).
    Duplicate ids and records without the question field are errors naming the record."""
    out: list[dict] = []
    seen: set[str] = set()
    for pos, (where, rec) in enumerate(_iter_source(source, fields)):
        if fields.limit is not None and pos >= fields.limit:
            break
        if fields.question_field not in rec:
            raise DataError(f"{where}: record has no question field {fields.question_field!r}")
        rid = _record_id(rec, pos, fields.id_field, where)
        if rid in seen:
            raise DataError(f"{where}: duplicate record id {rid!r}")
        seen.add(rid)
        item = {"id": rid, "question": str(rec[fields.question_field])}
        if rec.get("gold") is not None:  # a file jaxcot wrote (a run's data/*.jsonl): the final answer itself
            item["gold"] = str(rec["gold"])
        elif fields.answer_field and rec.get(fields.answer_field) is not None:
            item["gold"] = gold_answer(rec[fields.answer_field])
        out.append(item)
    return out


def _iter_source(source: str, fields: QuestionFields) -> Iterator[tuple[str, dict]]:
    if source.endswith(".jsonl") and os.path.isfile(source):
        for lineno, rec in iter_jsonl(source):
            yield f"{source}:{lineno}", rec
        return
    import datasets

    if os.path.isdir(source):
        ds = datasets.load_from_disk(source)
        if isinstance(ds, datasets.DatasetDict):
            if fields.split not in ds:
                raise DataError(f"{source}: no split {fields.split!r} (has {sorted(ds)})")
            ds = ds[fields.split]
    elif os.path.isfile(source):
        ext = os.path.splitext(source)[1].lstrip(".")
        kind = {"json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
        if kind is None:
            raise DataError(f"{source}: unsupported data file type .{ext} (jsonl, json, parquet, csv)")
        ds = datasets.load_dataset(kind, data_files=source, split="train")
    elif source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        ds = datasets.load_dataset(name, config or None, split=fields.split)
    else:
        raise FileNotFoundError(f"{source}: no such data file or folder (or use hf:NAME[:CONFIG])")
    for i, rec in enumerate(ds):
        yield f"{source}[{i}]", dict(rec)


__all__ = ["QuestionFields", "load_questions"]
