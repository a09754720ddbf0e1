"""The eval stage: every student's accuracy, chain length and throughput on a test set, and the
batch-1 latency of all of them measured together (`evaluate_students`).

A `Student` is a model folder plus the prompt it is asked with: TokenSkip's students carry the
compression ratio in theirs, so one model can be asked at several ratios.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxcot.config import check_counts
from jaxcot.distributed import Share
from jaxcot.io import atomic_write_json, is_complete
from jaxcot.provenance import Fingerprint, claimed, content_digest, up_to_date
from jaxcot.text.grading import Grader
from jaxcot.text.prompts import PromptConfig, prompt_ids


@dataclasses.dataclass
class EvalConfig:
    """Settings of the eval stage.

    batch_size: the accuracy pass's batch and the throughput batch. latency_samples: test
    questions timed one at a time (batch 1). latency_interleave: every student loaded at once,
    taking turns question by question, so a slow spell of a shared machine hits all alike; false:
    one student after another, one in memory at a time (large models). latency_warm: taking
    turns, each timed question is first run once untimed by the same student, so that its weights
    and program are in cache as in a server running it alone (no result is reused).
    """

    max_new_tokens: int = 320
    batch_size: int = 64
    latency_samples: int = 16
    latency_interleave: bool = True
    latency_warm: bool = True

    def __post_init__(self):
        check_counts(self, "max_new_tokens", "batch_size", "latency_samples")


@dataclasses.dataclass(frozen=True)
class Student:
    """A row of the evaluation: `name`, the model folder at `path`, and `prompt` (how a test
    question becomes its prompt)."""

    name: str
    path: str
    prompt: PromptConfig = dataclasses.field(default_factory=lambda: PromptConfig(template="{question}"))


def _load(student: Student, cache: dict, programs: dict):
    """(Generator, tokenizer) of a student's model, loaded once per path in `cache`; the students'
    generators share their compiled programs (`programs`), the students being one architecture."""
    from jaxcot.generate import Generator
    from jaxcot.models import load_model, load_tokenizer

    if student.path not in cache:
        tok = load_tokenizer(student.path)
        cache[student.path] = (Generator(load_model(student.path), tok, programs=programs), tok)
    return cache[student.path]


def evaluate_student(student: Student, gen, tokenizer, test: Sequence[dict], cfg: EvalConfig,
                     grade: Grader) -> dict:
    """Accuracy and mean CoT tokens on `test` ({question, gold}), and throughput at batch
    `cfg.batch_size` (the first batch again, compiled). Returns a JSON-able dict."""
    from jaxcot.eval.metrics import cot_tokens, throughput

    ids = [prompt_ids(tokenizer, it["question"], student.prompt) for it in test]
    outs = gen.generate_ids(ids, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    correct = [grade(o.text, it["gold"]) for o, it in zip(outs, test)]
    cot = [cot_tokens(o.text, count) for o in outs]
    big = ids[: cfg.batch_size]
    t0 = time.perf_counter()
    again = gen.generate_ids(big, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    dt = time.perf_counter() - t0
    return {
        "n": len(test),
        "accuracy": float(np.mean(correct)),
        "mean_cot_tokens": float(np.mean(cot)),
        "mean_new_tokens": float(np.mean([len(o.token_ids) for o in outs])),
        "throughput_tok_s": throughput(sum(len(o.token_ids) for o in again), dt),
        "examples": [{"question": it["question"], "output": o.text, "correct": c}
                     for it, o, c in list(zip(test, outs, correct))[:5]],
    }


def _warm(student: Student, cache: dict, programs: dict, test: Sequence[dict], cfg: EvalConfig):
    """A student's Generator and its batch-1 prompts, warmed: one untimed question per
    prompt-length bucket, so that no compile falls inside the timed pass."""
    from jaxcot.generate.sampler import bucket_length

    gen, tok = _load(student, cache, programs)
    prompts = [prompt_ids(tok, it["question"], student.prompt) for it in test[: cfg.latency_samples]]
    warm = {bucket_length(len(p), gen.sampler.min_bucket): p for p in prompts}
    for p in warm.values():
        gen.generate_ids([p], max_new_tokens=cfg.max_new_tokens, batch_size=1)
    return gen, prompts


def measure_latency(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig,
                    programs: dict | None = None) -> dict:
    """Batch-1 latency of every student on the first `cfg.latency_samples` test questions,
    interleaved or one after another (see `EvalConfig`).

    Returns {"questions": n, "latency_s": {name: mean seconds}, "times": {name: [seconds]}}.
    programs: compiled programs shared by the students' generators (see `jaxcot.generate.Sampler`).
    """
    programs = {} if programs is None else programs
    times: dict[str, list[float]] = {s.name: [] for s in students}

    def timed(gen, prompt) -> float:
        t0 = time.perf_counter()
        gen.generate_ids([prompt], max_new_tokens=cfg.max_new_tokens, batch_size=1)
        return time.perf_counter() - t0

    if cfg.latency_interleave:
        cache: dict = {}
        ready = {s.name: _warm(s, cache, programs, test, cfg) for s in students}
        names = list(ready)
        for q in range(len(ready[names[0]][1])):
            for k in range(len(names)):
                name = names[(q + k) % len(names)]
                gen, prompts = ready[name]
                if cfg.latency_warm:
                    gen.generate_ids([prompts[q]], max_new_tokens=cfg.max_new_tokens, batch_size=1)
                times[name].append(timed(gen, prompts[q]))
    else:
        for s in students:
            gen, prompts = _warm(s, {}, programs, test, cfg)
            times[s.name] = [timed(gen, p) for p in prompts]
            del gen
    n = len(next(iter(times.values())))
    return {"questions": n, "latency_s": {k: float(np.mean(t)) for k, t in times.items()}, "times": times}


def student_fingerprint(student: Student, test: Sequence[dict], cfg: EvalConfig,
                        origin: Mapping[str, Any] = ()) -> Fingerprint:
    """What `<name>.json` records as its origin: the student's weights, prompt and test set, and
    the settings that change its accuracy pass (`origin`: the grader's name)."""
    return Fingerprint.of({"prompt": student.prompt, "eval.max_new_tokens": cfg.max_new_tokens,
                           "eval.batch_size": cfg.batch_size, "test": content_digest(test), **dict(origin)},
                          {"model": student.path})


def latency_fingerprint(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig) -> Fingerprint:
    """What `latency.json` records as its origin: every student together and every eval setting."""
    return Fingerprint.of({"eval": cfg, "students": [(s.name, s.prompt) for s in students],
                           "test": content_digest(test[: cfg.latency_samples])},
                          {f"model:{s.name}": s.path for s in students})


def eval_outputs(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig,
                 origin: Mapping[str, Any] = ()) -> dict[str, Fingerprint]:
    """{file name in the eval folder: its fingerprint}, for every output of `evaluate_students`."""
    out = {f"{s.name}.json": student_fingerprint(s, test, cfg, origin) for s in students}
    out["latency.json"] = latency_fingerprint(students, test, cfg)
    return out


def evaluate_students(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig, out_dir: str,
                      grade: Grader, *, origin: Mapping[str, Any] = (), replace: bool = False,
                      say: Callable[[str], None] = print, share: Share = Share()) -> dict[str, dict]:
    """The eval stage: `<out_dir>/<name>.json` per student and `<out_dir>/latency.json` (all of
    them measured together), each kept while its fingerprint (`eval_outputs`) matches; returns
    {name: result} with each result's `latency_s` filled in. An output made from other settings
    is refused, or with `replace` made again. share: this process's part of a multi-process run
    (`jaxcot.distributed`): the students `share.take(students)` are evaluated (and returned), and
    process 0 alone times the latency of all of them, on one host as one process would."""
    fps = eval_outputs(students, test, cfg, origin)
    results, cache, programs = {}, {}, {}
    for s in share.take(students):
        out = os.path.join(out_dir, f"{s.name}.json")
        if is_complete(out) and up_to_date(out, fps[f"{s.name}.json"]):
            with open(out) as f:
                results[s.name] = json.load(f)
            continue
        with claimed(out, fps[f"{s.name}.json"], replace=replace, say=say):
            say(f"evaluate {s.name} on {len(test)} test questions")
            gen, tok = _load(s, cache, programs)
            results[s.name] = evaluate_student(s, gen, tok, test, cfg, grade)
            atomic_write_json(out, results[s.name])
    cache.clear()
    if not share.lead:
        return results
    lat_path = os.path.join(out_dir, "latency.json")
    if is_complete(lat_path) and up_to_date(lat_path, fps["latency.json"]):
        with open(lat_path) as f:
            latency = json.load(f)
    else:
        with claimed(lat_path, fps["latency.json"], replace=replace, say=say):
            say(f"latency at batch 1: {min(cfg.latency_samples, len(test))} questions, {len(students)} students "
                + ("taking turns" if cfg.latency_interleave else "one after another"))
            latency = measure_latency(students, test, cfg, programs)
            atomic_write_json(lat_path, latency)
    for name, r in results.items():
        r["latency_s"] = latency["latency_s"][name]
    return results


__all__ = ["EvalConfig", "Student", "eval_outputs", "evaluate_student", "evaluate_students", "latency_fingerprint",
           "measure_latency", "student_fingerprint"]
