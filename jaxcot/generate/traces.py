"""The generate stage: one trace record per question, written resumably (`write_traces`).

A trace record is `{"id", "question", "chain", "answer", "gold"?, "correct"?, "finish_reason",
"num_tokens"}`: the completion split by `jaxcot.text.answers.split_answer`; `correct` (graded by
`GenerateConfig.grader`, or the caller's grader) when the question has a gold answer;
`finish_reason` 'eos', 'stop', 'length' (the token limit: a truncated chain) or 'early' (an early
exit took a trial answer); with `GenerateConfig.engine.continuous`, `cache_peak` (the most KV-cache
slots the row held) and, after an early exit, `early_exit_at` (where its answer marker starts in
the generated tokens). `unusable` says which traces the later stages leave out. `jaxcot generate
--data` and `jaxcot run` both call `write_traces`.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping, Sequence

from jaxcot.distributed import Share, part_path
from jaxcot.generate.config import DTYPES, QUANTIZE, SOURCES, EngineConfig, GenerateConfig
from jaxcot.io import DataError, ResumableJsonl, read_jsonl
from jaxcot.provenance import Fingerprint, claimed, content_digest
from jaxcot.text.answers import split_answer
from jaxcot.text.grading import Grader, get_grader
from jaxcot.text.prompts import prompt_ids


def row_seed(record_id: str) -> int:
    """A stable per-record seed (sampling does not depend on batching or on resuming)."""
    return zlib.crc32(record_id.encode("utf-8"))


def trace_record(item: dict, completion, cfg: GenerateConfig, grade: Grader | None = None) -> dict:
    """The trace record of one question's `Completion` (see the module docstring)."""
    text = completion.text.strip()
    chain, answer = split_answer(text)
    rec = {"id": item["id"], "question": item["question"], "chain": chain, "answer": answer}
    if "gold" in item:
        rec["gold"] = item["gold"]
        if grade is not None:
            rec["correct"] = bool(answer) and bool(grade(text, item["gold"]))
    rec["finish_reason"] = completion.finish_reason
    rec["num_tokens"] = len(completion.token_ids)
    # the continuous engine's (`GenerateConfig.engine`); absent from the static loop's records
    if (peak := getattr(completion, "cache_peak", None)) is not None:
        rec["cache_peak"] = peak
    if (exit_at := getattr(completion, "exit_at", None)) is not None:
        rec["early_exit_at"] = exit_at
    if cfg.save_token_stats:
        rec["token_ids"] = completion.token_ids
        rec["logprobs"] = completion.logprobs
        rec["entropy"] = completion.entropy
    return rec


def unusable(trace: Mapping[str, Any]) -> str | None:
    """Why no later stage can use a trace record, or None: 'truncated' (it hit the token limit,
    `finish_reason` 'length': a chain cut off mid-way) or 'no_answer' (no final answer: nothing for
    GoGI to differentiate, no answer for a training chain to end with). The score and compress
    stages add their own reasons (`ScoreConfig.skip_reason`; compress's correctness filter)."""
    if trace.get("finish_reason") == "length":
        return "truncated"
    answer = trace.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return "no_answer"
    return None


def trace_counts(traces: Sequence[Mapping[str, Any]]) -> str:
    """'4 records: 2 correct, 1 truncated (hit max_new_tokens)' (the parts that apply)."""
    graded = [t for t in traces if "correct" in t]
    parts = [f"{sum(bool(t['correct']) for t in graded)} correct of {len(graded)} graded"] if graded else []
    if n := sum(t.get("finish_reason") == "length" for t in traces):
        parts.append(f"{n} truncated (hit max_new_tokens)")
    return f"{len(traces)} records" + (f": {', '.join(parts)}" if parts else "")


def skip_summary(skipped: Mapping[str, int], total: int, what: str = "traces") -> str:
    """'left out 3 of 10 traces: 2 truncated, 1 no_answer' (reasons with a count of 0 are not named)."""
    named = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    return f"left out {sum(skipped.values())} of {total} {what}" + (f": {named}" if named else "")


def reference_trace(item: dict) -> dict:
    """A dataset's own worked solution as a trace: testbed chains as they are; a benchmark's
    `solution` split at its answer (`split_answer`), else followed by "The answer is <gold>."."""
    if "chain" in item and "answer" in item:
        chain, answer = item["chain"], item["answer"]
    else:
        solution = (item.get("solution") or "").strip()
        if not solution:
            raise DataError(f"record {item.get('id')}: no reference solution to use as a chain")
        chain, answer = split_answer(solution)
        if not answer or not chain.strip():
            chain, answer = solution + "\n", f"The answer is {item['gold']}."
    return {"id": item["id"], "question": item["question"], "chain": chain, "answer": answer,
            "gold": item["gold"], "correct": True}


def traces_fingerprint(items: Sequence[dict], cfg: GenerateConfig, origin: Mapping[str, Any] = (),
                       inputs: Mapping[str, str] = ()) -> Fingerprint:
    """What a traces file written by `write_traces` from these arguments records as its origin."""
    return Fingerprint.of({"generate": fingerprint_settings(cfg), "questions": content_digest(items),
                           **dict(origin)}, inputs)


def fingerprint_settings(cfg: GenerateConfig) -> dict:
    """`cfg` as a traces fingerprint holds it: every field, the engine section only where it is not
    the default (the static loop), so that traces written before `GenerateConfig` had one stay up
    to date."""
    settings = dataclasses.asdict(cfg)
    if cfg.engine == EngineConfig():
        del settings["engine"]
    return settings


def write_traces(items: Sequence[dict], out: str, cfg: GenerateConfig, generator=None, *,
                 grade: Grader | None = None, origin: Mapping[str, Any] = (), inputs: Mapping[str, str] = (),
                 replace: bool = False, say=None, progress: bool = True, share: Share = Share()) -> list[dict]:
    """Write one trace per item of `items` ({id, question, gold?}) to `out` and return them all.

    Resumes an interrupted run (`ResumableJsonl`): only pending ids are generated. generator: a
    `Generator`, or a zero-argument callable returning one, called only when there is work (so a
    finished output loads no model); not needed for `source: reference`. grade(completion, gold)
    marks each trace with a gold answer `correct` (default: `cfg.grader`'s). The output's
    fingerprint (`jaxcot.provenance`) holds `cfg`, the questions,
    `origin` (further settings: the model's name, the grader's) and the contents of `inputs`
    ({name: file or folder}: the model); an output made otherwise is refused, or with `replace`
    made again (`say` is told why). share: this process's part of a multi-process run
    (`jaxcot.distributed`): only its batches are generated, into `part_path(out, share)`, and
    only they are returned.
    """
    from jaxcot.generate.api import ProgressBar

    fp = traces_fingerprint(items, cfg, origin, inputs)
    pad_to = None  # each item's planned prompt length (a share plans over the whole input)
    if share.count > 1:
        if cfg.source == "model":
            generator = generator() if callable(generator) else generator
        items, pad_to = _own_items(items, cfg, generator, share)
        out = part_path(out, share)
    with claimed(out, fp, replace=replace, say=say), ResumableJsonl(out, ids=[it["id"] for it in items]) as writer:
        todo = [it for it in items if it["id"] in set(writer.pending)]
        if cfg.source == "reference":
            for it in todo:
                writer.write(reference_trace(it))
        elif todo:
            gen = generator() if callable(generator) else generator
            if gen is None:
                raise ValueError("write_traces: source 'model' needs a generator")
            grade = grade if grade is not None else get_grader(cfg.grader)
            bar = ProgressBar(len(items), cfg.max_new_tokens, initial=len(items) - len(todo), enabled=progress)
            _generate(gen, todo, writer, cfg, grade, bar, pad_to)
    return read_jsonl(out)


def _own_items(items: Sequence[dict], cfg: GenerateConfig, gen, share: Share) -> tuple[list[dict], dict | None]:
    """The items of `share`'s batches, as the generator batches the whole of `items`, and {id:
    the prompt length its batch pads to} as planned over the whole of `items` (None: no model)."""
    from jaxcot.generate.api import length_batches

    if cfg.source != "model":
        return [items[i] for batch in share.take(length_batches([0] * len(items), cfg.batch_size)) for i in batch], None
    lengths = [len(prompt_ids(gen.tokenizer, it["question"], cfg.prompt)) for it in items]
    pad_to = gen.plan_pad_to(lengths, cfg.batch_size)
    own = [items[i] for batch in share.take(length_batches(lengths, cfg.batch_size)) for i in batch]
    return own, {items[i]["id"]: pad_to[i] for i in range(len(items))}


def _generate(gen, todo: list[dict], writer: ResumableJsonl, cfg: GenerateConfig, grade, bar,
              pad_to: dict | None = None) -> None:
    ids = [prompt_ids(gen.tokenizer, it["question"], cfg.prompt) for it in todo]

    def write(idx: list[int], completions) -> None:
        for i, c in zip(idx, completions):
            writer.write(trace_record(todo[i], c, cfg, grade))
        bar.update(completions)

    try:
        gen.generate_ids(ids, max_new_tokens=cfg.max_new_tokens, sampling=cfg.sampling(), stop=tuple(cfg.stop),
                         seed=cfg.seed, row_seeds=[row_seed(it["id"]) for it in todo], batch_size=cfg.batch_size,
                         on_batch=write, pad_to=None if pad_to is None else [pad_to[it["id"]] for it in todo],
                         on_progress=bar.listener, overflow=cfg.overflow)
    finally:
        bar.close()


def load_generator(model_path: str, cfg: GenerateConfig, tokenizer_path: str | None = None,
                   model=None, tokenizer=None, mesh=None, quantize: str | None = None):
    """A `Generator` for `cfg` (dtype, min_bucket), its batch sharded over the data axis of `mesh`
    (default: every device). model / tokenizer: already loaded ones to reuse instead of reading
    `model_path`. quantize: 'int8' for int8 weight-only decoding (see `Generator`). The decode
    loop runs as `cfg.engine` says (`EngineConfig`)."""
    import jax.numpy as jnp

    from jaxcot.generate.api import Generator
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.sharding import make_mesh

    mesh = mesh if mesh is not None else make_mesh()
    if model is None:
        dtype = jnp.dtype(cfg.dtype)
        model = load_model(model_path, dtype=dtype, param_dtype=dtype, mesh=mesh)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_path or model_path)
    return Generator(model, tokenizer, mesh=mesh, min_bucket=cfg.min_bucket, quantize=quantize, engine=cfg.engine)


__all__ = ["DTYPES", "QUANTIZE", "SOURCES", "GenerateConfig", "fingerprint_settings", "load_generator",
           "reference_trace", "row_seed", "skip_summary", "trace_counts", "trace_record", "traces_fingerprint",
           "unusable", "write_traces"]
