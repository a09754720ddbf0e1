"""Evaluation: one model on a test set (`evaluate_model`, `jaxcot eval`), and the eval stage of a run,
every student's accuracy, chain length and throughput, then the batch-1 latency of all of them
measured together (`evaluate_students`, which evaluates each through `evaluate_model`).

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

from jaxcot.config import check, check_counts
from jaxcot.distributed import Share
from jaxcot.generate.config import EngineConfig
from jaxcot.io import DataError, atomic_write_json, atomic_write_text, is_complete
from jaxcot.logs import progress as progress_bar
from jaxcot.programs import ProgramCache
from jaxcot.provenance import ALWAYS, Fingerprint, claimed, content_digest, up_to_date
from jaxcot.shapes import bucket_length
from jaxcot.text.grading import Grader, check_grader_name, get_grader
from jaxcot.text.prompts import PromptConfig, prompt_ids


@dataclasses.dataclass
class DecoderRow:
    """Decode-time compression as rows of a run's table: each student named in `students` (method
    rows of the run; default the uncompressed control) is evaluated again, as the row
    `<method>+<name>`, decoding with `engine` (the continuous engine: early exit, KV eviction)
    instead of `EvalConfig.engine`. The same weights and prompt: the row differs in decoding alone."""

    name: str
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    students: list[str] = dataclasses.field(default_factory=lambda: ["original"])

    def __post_init__(self):
        check(bool(self.name) and "/" not in self.name and not self.name.startswith("."), "name",
              f"must be a plain file name (it names the rows' files), got {self.name!r}")
        check(self.engine.continuous, "engine.continuous",
              f"decoder row {self.name!r} decodes with the continuous engine (early exit, KV eviction): "
              "set engine.continuous=true")
        check(bool(self.students), "students", f"decoder row {self.name!r} names no student")
        check(len(set(self.students)) == len(self.students), "students", f"must not repeat a row, got {self.students}")


@dataclasses.dataclass
class EvalConfig:
    """Settings of the eval stage.

    batch_size: the accuracy pass's batch and the throughput batch. latency_samples: test
    questions timed one at a time (batch 1). latency_interleave: every student loaded at once,
    taking turns question by question, so a slow spell of a shared machine hits all alike; false:
    one student after another, one in memory at a time (large models). latency_warm: taking
    turns, each timed question is first run once untimed by the same student, so that its weights
    and program are in cache as in a server running it alone (no result is reused).

    `jaxcot eval` only (a run sets them itself): grader, gsm8k | math | 'module:function'
    (`jaxcot.text.grading.get_grader`; None: gsm8k); prompt, how a question becomes the prompt
    (None: the question alone as the user turn, as a run asks its students); baseline, an earlier
    `jaxcot eval` result JSON to give ActRatio and speedup against.

    engine: how every generator of the eval decodes, the accuracy pass's and the latency pass's
    (`EngineConfig`: the static loop by default); with `engine.continuous` a result adds
    `mean_cache_peak` (KV-cache slots a row held at most, on average) and `early_exit_share`.

    decoders: a run's only (`jaxcot eval` leaves them aside): rows that decode a trained student
    otherwise, each `DecoderRow` adding `<method>+<name>` beside the methods it names.
    """

    max_new_tokens: int = 320
    batch_size: int = 64
    latency_samples: int = 16
    latency_interleave: bool = True
    latency_warm: bool = True
    grader: str | None = None
    prompt: PromptConfig | None = None
    baseline: str | None = None
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    decoders: list[DecoderRow] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        check_counts(self, "max_new_tokens", "batch_size", "latency_samples")
        check_grader_name(self.grader, optional=True)
        names = [d.name for d in self.decoders]
        check(len(set(names)) == len(names), "decoders", f"names must be unique, got {names}")


@dataclasses.dataclass(frozen=True)
class Student:
    """A row of the evaluation: `name`, the model folder at `path`, `prompt` (how a test question
    becomes its prompt), the `tokenizer` source (None: `path`), and `engine`, how the row decodes
    (None: `EvalConfig.engine`; a run's decoder rows set theirs, `DecoderRow`)."""

    name: str
    path: str
    prompt: PromptConfig = dataclasses.field(default_factory=lambda: PromptConfig(template="{question}"))
    tokenizer: str | None = None
    engine: EngineConfig | None = None

    def decoding(self, cfg: EvalConfig) -> EngineConfig:
        """The engine this row decodes with: its own, else `cfg.engine`."""
        return cfg.engine if self.engine is None else self.engine


def _load(student: Student, cache: dict, programs: ProgramCache, engine: EngineConfig):
    """(Generator, tokenizer) of a student's model decoding as its own engine says, else as
    `engine`, one per (path, engine) in `cache`. Two rows of one model that decode otherwise get a
    Generator each over the same loaded weights (`cache[path]`). The students' generators share
    their compiled programs (`programs`), the students being one architecture (a program's key
    holds its engine's settings)."""
    from jaxcot.generate import Generator
    from jaxcot.models import load_model, load_tokenizer

    engine = engine if student.engine is None else student.engine
    key = (student.path, repr(engine))
    if key not in cache:
        weights = ("weights", student.path, student.tokenizer)
        if weights not in cache:
            cache[weights] = (load_model(student.path), load_tokenizer(student.tokenizer or student.path))
        model, tok = cache[weights]
        cache[key] = (Generator(model, tok, programs=programs, engine=engine), tok)
    return cache[key]


def evaluate_student(student: Student, gen, tokenizer, test: Sequence[dict], cfg: EvalConfig,
                     grade: Grader, progress: bool = True) -> dict:
    """Accuracy and mean CoT tokens on `test` ({question, gold}), and throughput at batch
    `cfg.batch_size` (the first batch again, compiled). Returns a JSON-able dict. progress: a
    token bar over the accuracy pass (`jaxcot.generate.api.ProgressBar`; where someone watches)."""
    from jaxcot.eval.metrics import cot_tokens, throughput
    from jaxcot.generate.api import ProgressBar

    ids = [prompt_ids(tokenizer, it["question"], student.prompt) for it in test]
    bar = ProgressBar(len(ids), cfg.max_new_tokens, desc=f"eval {student.name}", enabled=progress)
    try:
        outs = gen.generate_ids(ids, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                on_batch=lambda idx, done: bar.update(done), on_progress=bar.listener)
    finally:
        bar.close()
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    correct = [grade(o.text, it["gold"]) for o, it in zip(outs, test)]
    cot = [cot_tokens(o.text, count) for o in outs]
    big = ids[: cfg.batch_size]
    if gen.engine.continuous:  # its queue of batch_size prompts is a program the accuracy pass did not run
        gen.generate_ids(big, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    again = gen.generate_ids(big, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    dt = time.perf_counter() - t0
    peaks = [o.cache_peak for o in outs if getattr(o, "cache_peak", None) is not None]
    engine = {"mean_cache_peak": float(np.mean(peaks)),  # the continuous engine's (`Student.decoding`)
              "early_exit_share": float(np.mean([getattr(o, "exit_at", None) is not None for o in outs]))
              } if peaks else {}
    return {
        "n": len(test),
        "accuracy": float(np.mean(correct)),
        "mean_cot_tokens": float(np.mean(cot)),
        "mean_new_tokens": float(np.mean([len(o.token_ids) for o in outs])),
        "throughput_tok_s": throughput(sum(len(o.token_ids) for o in again), dt),
        **engine,
        "examples": [{"question": it["question"], "output": o.text, "correct": c}
                     for it, o, c in list(zip(test, outs, correct))[:5]],
    }


def _warm(student: Student, cache: dict, programs: ProgramCache, test: Sequence[dict], cfg: EvalConfig):
    """A student's Generator and its batch-1 prompts, warmed: one untimed question per
    prompt-length bucket, so that no compile falls inside the timed pass."""
    from jaxcot.generate.sampler import PROMPT_BUCKET_STEPS

    gen, tok = _load(student, cache, programs, cfg.engine)
    prompts = [prompt_ids(tok, it["question"], student.prompt) for it in test[: cfg.latency_samples]]
    warm = {bucket_length(len(p), gen.sampler.min_bucket, PROMPT_BUCKET_STEPS): p for p in prompts}
    for p in warm.values():
        gen.generate_ids([p], max_new_tokens=cfg.max_new_tokens, batch_size=1)
    return gen, prompts


def measure_latency(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig,
                    programs: ProgramCache | None = None, cache: dict | None = None, progress: bool = True) -> dict:
    """Batch-1 latency of every student on the first `cfg.latency_samples` test questions,
    interleaved or one after another (see `EvalConfig`).

    Returns {"questions": n, "latency_s": {name: mean seconds}, "times": {name: [seconds]}}.
    programs: compiled programs shared by the students' generators (see `jaxcot.generate.Sampler`);
    cache: generators and models already loaded (see `_load`), else
    each student is loaded here. progress: a bar over the timed runs (where someone watches).
    """
    programs = ProgramCache() if programs is None else programs
    times: dict[str, list[float]] = {s.name: [] for s in students}
    n_q = min(cfg.latency_samples, len(test))
    bar = progress_bar(n_q * len(students), desc="latency (batch 1)", unit="run", enabled=progress)

    def timed(gen, prompt) -> float:
        t0 = time.perf_counter()
        gen.generate_ids([prompt], max_new_tokens=cfg.max_new_tokens, batch_size=1)
        dt = time.perf_counter() - t0
        bar.update(1)
        return dt

    try:
        if cfg.latency_interleave:
            cache = {} if cache is None else cache
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
                gen, prompts = _warm(s, {} if cache is None else cache, programs, test, cfg)
                times[s.name] = [timed(gen, p) for p in prompts]
                del gen
    finally:
        bar.close()
    n = len(next(iter(times.values())))
    return {"questions": n, "latency_s": {k: float(np.mean(t)) for k, t in times.items()}, "times": times}


def student_fingerprint(student: Student, test: Sequence[dict], cfg: EvalConfig, origin: Mapping[str, Any] = (),
                        *, latency: bool = False) -> Fingerprint:
    """What an `evaluate_model` result records as its origin: the student's weights (and tokenizer),
    prompt and test set, the settings that change its accuracy pass (`origin`: the grader's name),
    the baseline file; with `latency`, every eval setting. (A run's `<name>.json` records the
    first three alone: a run sets no tokenizer, grader or baseline here.) The engine the student
    decodes with (`Student.decoding`) counts where it is not the default (`eval_settings`)."""
    settings = {"prompt": student.prompt, "eval.max_new_tokens": cfg.max_new_tokens,
                "eval.batch_size": cfg.batch_size, "test": content_digest(test), **dict(origin)}
    settings.update({"eval.grader": cfg.grader} if cfg.grader else {})
    engine = student.decoding(cfg)
    settings.update({"eval.engine": engine} if engine != EngineConfig() else {})
    inputs = {"model": student.path, **({"tokenizer": student.tokenizer} if student.tokenizer else {}),
              **({"baseline": cfg.baseline} if cfg.baseline else {})}
    if latency:
        settings["eval"] = eval_settings(dataclasses.replace(cfg, baseline=None))
    return Fingerprint.of(settings, inputs)


def eval_settings(cfg: EvalConfig) -> dict:
    """`cfg` as a fingerprint holds it: every field, the engine section only where it is not the
    default (the static loop), so that results recorded before `EvalConfig` had one stay up to
    date; never the decoder rows (each row's own engine counts as its student's, see
    `latency_fingerprint`)."""
    settings = dataclasses.asdict(cfg)
    del settings["decoders"]
    if cfg.engine == EngineConfig():
        del settings["engine"]
    return settings


def latency_fingerprint(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig) -> Fingerprint:
    """What `latency.json` records as its origin: every student together (with its own engine,
    where it has one) and every eval setting."""
    rows = [(s.name, s.prompt) if s.engine is None else (s.name, s.prompt, s.engine) for s in students]
    return Fingerprint.of({"eval": eval_settings(cfg), "students": rows,
                           "test": content_digest(test[: cfg.latency_samples])},
                          {f"model:{s.name}": s.path for s in students})


def eval_outputs(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig,
                 origin: Mapping[str, Any] = ()) -> dict[str, Fingerprint]:
    """{file name in the eval folder: its fingerprint}, for every output of `evaluate_students`."""
    out = {f"{s.name}.json": student_fingerprint(s, test, cfg, origin) for s in students}
    out["latency.json"] = latency_fingerprint(students, test, cfg)
    return out


def table_path(out_path: str) -> str:
    """Where `evaluate_model` puts its Markdown table: beside the JSON, as .md."""
    return (out_path[: -len(".json")] if out_path.endswith(".json") else out_path) + ".md"


def model_student(model: str, cfg: EvalConfig, *, name: str | None = None, tokenizer: str | None = None) -> Student:
    """The `Student` `jaxcot eval` evaluates: the model (a folder, .gguf file, alias or hub id,
    `jaxcot.models.names.resolve_model`) asked with `cfg.prompt`; named `name`, else after its
    folder or file (a run's `students/<row>/model` after its row), an alias or hub id as given."""
    from jaxcot.models.names import resolve_model

    path = resolve_model(model)
    if name is None and not os.path.exists(model):
        name = model
    elif name is None:
        base = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        name = os.path.basename(os.path.dirname(os.path.normpath(path))) if base == "model" else base
    prompt = cfg.prompt or Student(name, path).prompt
    return Student(name, path, prompt, None if tokenizer is None else resolve_model(tokenizer))


def against_baseline(result: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float]:
    """ActRatio (mean chain tokens over the baseline's) and speedup (the baseline's batch-1
    latency over this one's), each where both results hold its numbers."""
    from jaxcot.eval.metrics import act_ratio, speedup

    out = {}
    if base.get("mean_cot_tokens"):
        out["act_ratio"] = act_ratio(result["mean_cot_tokens"], base["mean_cot_tokens"])
    if result.get("latency_s") and base.get("latency_s"):
        out["speedup"] = speedup(base["latency_s"], result["latency_s"])
    return out


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: {what} is not valid JSON ({e})") from None


def evaluate_model(student: Student | str, test: Sequence[dict], cfg: EvalConfig, out_path: str,
                   grade: Grader | None = None, *, latency: bool = True, origin: Mapping[str, Any] = (),
                   replace: bool = False, say: Callable[[str], None] = print, source: str = "test",
                   cache: dict | None = None, programs: ProgramCache | None = None, progress: bool = True) -> dict:
    """One model on `test` ({id, question, gold}): accuracy by `grade` (default `cfg.grader`'s),
    mean chain tokens, throughput at batch `cfg.batch_size` (`evaluate_student`), with `latency`
    the mean batch-1 latency (`measure_latency`, this model alone), and with `cfg.baseline` (an
    earlier result) ActRatio and speedup against it (`against_baseline`). Written to `out_path`
    (JSON) and a Markdown table beside it (`table_path`), kept while its fingerprint
    (`student_fingerprint`) matches; returns the result.

    student: a `Student`, or a model path or name (`model_student`). `jaxcot eval` calls it; so
    does a run's eval stage, per student without `latency` (a run times its students together).
    `source` names the questions in errors; cache / programs: loaded generators and compiled
    programs to share (see `measure_latency`); `origin`, `replace`, `say` as in `evaluate_students`.
    """
    from jaxcot.eval.report import model_table

    student = model_student(student, cfg) if isinstance(student, str) else student
    if not test:
        raise DataError(f"{source}: no questions to evaluate on")
    if (missing := next((str(it.get("id", i)) for i, it in enumerate(test) if it.get("gold") is None), None)):
        raise DataError(f"{source}: question {missing} has no gold answer to grade against")
    fp = student_fingerprint(student, test, cfg, origin, latency=latency)
    if replace != ALWAYS and is_complete(out_path) and up_to_date(out_path, fp):
        return _read_json(out_path, "an evaluation result")
    cache, programs = ({} if cache is None else cache), (ProgramCache() if programs is None else programs)
    grade = grade or get_grader(cfg.grader)
    with claimed(out_path, fp, replace=replace, say=say):
        say(f"evaluate {student.name} on {len(test)} test questions")
        gen, tok = _load(student, cache, programs, cfg.engine)
        result = evaluate_student(student, gen, tok, test, cfg, grade, progress=progress)
        if latency:
            lat = measure_latency([student], test, cfg, programs, cache=cache, progress=progress)
            result["latency_s"] = lat["latency_s"][student.name]
        if cfg.baseline:
            result.update(against_baseline(result, _read_json(cfg.baseline, "the baseline result")))
        atomic_write_text(table_path(out_path), model_table({student.name: result}))
        atomic_write_json(out_path, result)
    return result


def evaluate_students(students: Sequence[Student], test: Sequence[dict], cfg: EvalConfig, out_dir: str,
                      grade: Grader, *, origin: Mapping[str, Any] = (), replace: bool = False,
                      say: Callable[[str], None] = print, share: Share = Share()) -> dict[str, dict]:
    """The eval stage: `<out_dir>/<name>.json` per student (`evaluate_model`, without its latency
    pass) and `<out_dir>/latency.json` (all of them measured together), each kept while its
    fingerprint (`eval_outputs`) matches; returns {name: result} with each result's `latency_s`
    filled in. An output made from other settings is refused, or with `replace` made again.
    share: this process's part of a multi-process run (`jaxcot.distributed`): the students
    `share.take(students)` are evaluated (and returned), and process 0 alone times the latency of
    all of them, on one host as one process would."""
    fps = eval_outputs(students, test, cfg, origin)
    results, cache, programs = {}, {}, ProgramCache()
    for s in share.take(students):
        results[s.name] = evaluate_model(s, test, cfg, os.path.join(out_dir, f"{s.name}.json"), grade, latency=False,
                                         origin=origin, replace=replace, say=say, cache=cache, programs=programs)
    cache.clear()
    if not share.lead:
        return results
    lat_path = os.path.join(out_dir, "latency.json")
    if is_complete(lat_path) and up_to_date(lat_path, fps["latency.json"]):
        latency = _read_json(lat_path, "a latency result")
    else:
        with claimed(lat_path, fps["latency.json"], replace=replace, say=say):
            say(f"latency at batch 1: {min(cfg.latency_samples, len(test))} questions, {len(students)} students "
                + ("taking turns" if cfg.latency_interleave else "one after another"))
            latency = measure_latency(students, test, cfg, programs)
            atomic_write_json(lat_path, latency)
    for name, r in results.items():
        r["latency_s"] = latency["latency_s"][name]
    return results


__all__ = ["DecoderRow", "EvalConfig", "Student", "against_baseline", "eval_outputs", "eval_settings", "evaluate_model",
           "evaluate_student", "evaluate_students", "latency_fingerprint", "measure_latency", "model_student",
           "student_fingerprint", "table_path"]
