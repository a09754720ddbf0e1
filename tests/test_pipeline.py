"""`jaxcot run` end to end on a tiny random model with the testbed's reference chains."""

import json
import os

import pytest

from jaxcot.config import ConfigError, load_config
from jaxcot.run import RunConfig, run_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_folder):
    return tiny_model_folder


def test_demo_config_loads():
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"))
    # four students, plus the ground-truth ceiling
    assert [m.method for m in cfg.methods] == ["original", "gogi-ads", "tokenskip", "random", "oracle-ads"]
    assert cfg.score.goal == "value" and cfg.score.layers == [0]
    full = load_config(RunConfig, os.path.join(ROOT, "configs", "testbed-full.yaml"))
    assert {"gogi-static", "selfinfo-ads", "step-entropy"} <= {m.method for m in full.methods}
    assert sorted(m.gamma for m in full.methods if m.method == "tokenskip") == [0.5, 0.7]
    for name in ("smollm2-135m-gsm8k", "qwen2.5-7b-gsm8k", "gemma3-4b-math", "testbed-grpo"):
        load_config(RunConfig, os.path.join(ROOT, "configs", f"{name}.yaml"))


def test_bad_sections_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.method: must be one of .* got 'nope' \(on the command"):
        load_config(RunConfig, None, ["methods=[{name: x, method: nope}]"])
    with pytest.raises(ConfigError, match="^compress.unit: unknown key"):
        load_config(RunConfig, None, ["compress={unit: expression}"])
    with pytest.raises(ConfigError, match="^student.steps: unknown key"):
        load_config(RunConfig, None, ["student={steps: 3}"])
    with pytest.raises(ConfigError, match="^student.init_from: is set by the run"):
        load_config(RunConfig, None, ["student={init_from: x}"])
    with pytest.raises(ConfigError, match="^score.prompt: must be generate.prompt"):
        load_config(RunConfig, None, ["score.prompt={template: 'Q: {question}'}"])
    for key in ("generate.grader=math", "eval.baseline=e.json"):  # `jaxcot generate` / `jaxcot eval` settings
        with pytest.raises(ConfigError, match=rf"^{key.split('=')[0]}: is set by the run \(data.grader grades"):
            load_config(RunConfig, None, [key])
    with pytest.raises(ConfigError, match=r"^compress.ads.n_max: must be >= 1, got -1 \(on the command line\)"):
        load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"), ["compress.ads.n_max=-1"])
    with pytest.raises(ConfigError, match=r"^methods\[gogi-skip\]\.knobs\.ads\.beta: must be >= 0, got -1.0"):
        load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"),
                    ["methods=[{name: gogi-skip, method: gogi-ads, knobs: {ads: {beta: -1}}}]"])
    # a rule's setting given at the top is told its section
    with pytest.raises(ConfigError, match=r"^methods\[gogi-skip\]\.knobs\.beta: .*the 'ads' section: ads.beta"):
        load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"),
                    ["methods=[{name: gogi-skip, method: gogi-ads, knobs: {beta: 0.2}}]"])
    with pytest.raises(ConfigError, match=r"^compress.n_max: .*'ads' section"):
        load_config(RunConfig, None, ["compress={n_max: 2}"])
    with pytest.raises(ConfigError, match=r"^methods\[x\]\.knobs\.rule: must be one of \['ads', 'original'"):
        load_config(RunConfig, None, ["methods=[{name: x, method: gogi-ads, knobs: {rule: nosuch}}]"])
    with pytest.raises(ConfigError, match=r"^score.scorers: unknown scorer 'nosuch'"):
        load_config(RunConfig, None, ["score.scorers=[gogi, nosuch]"])


def test_student_and_compress_sections_are_the_stage_configs():
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"))
    tc = cfg.student_config("gogi-skip", "/m", "/r")
    assert (tc.init_from, tc.data.path) == ("/m", "/r/sets/gogi-skip.jsonl")
    assert tc.export_dir == "/r/students/gogi-skip/model"
    assert (tc.method, tc.max_steps, tc.epochs, tc.optim.lr, tc.data.packing) == ("full", 360, None, 2e-3, True)
    gogi = next(m for m in cfg.methods if m.method == "gogi-ads")
    cc = cfg.compress_config(gogi)
    assert (cc.tokens.units, cc.ads.n_max, cc.ads.calibrate, cc.gamma) == ("expression", 2, True, 0.5)
    ts = next(m for m in cfg.methods if m.method == "tokenskip")
    assert cfg.compress_config(ts).gamma is None  # TokenSkip's gamma is the ratio its student is asked for
    assert cfg.eval_prompt(ts).template == "{question}<|im_end|>0.5<|im_end|>"
    assert cfg.score_config().prompt == cfg.generate.prompt
    # rows that would train on the same set share one set and one student (TokenSkip at two ratios)
    full = load_config(RunConfig, os.path.join(ROOT, "configs", "testbed-full.yaml"))
    ts = [m for m in full.methods if m.method == "tokenskip"]
    assert len(ts) == 2 and full.owner(ts[1]) is ts[0] and ts[1] not in full.trained_rows()
    assert full.eval_prompt(ts[1]).template.endswith("0.7<|im_end|>")
    assert len(full.trained_rows()) == len(full.methods) - 1
    # one GoGI-Skip student for any ratio: its rows share one set, and each asks for its own ratio
    anyr = load_config(RunConfig, os.path.join(ROOT, "configs", "demo-any-ratio.yaml"))
    ratio_rows = [m for m in anyr.methods if m.method == "gogi-ads-ratio"]
    assert len(ratio_rows) == 3 and {anyr.owner(m).name for m in ratio_rows} == {ratio_rows[0].name}
    assert [anyr.eval_prompt(m).template for m in ratio_rows] == [
        f"{{question}}<|im_end|>{g}<|im_end|>" for g in ("0.5", "0.7", "0.9")]
    assert anyr.compress_config(ratio_rows[1]).gamma is None and anyr.compress_config(ratio_rows[1]).ads.calibrate
    per_gamma = [m for m in anyr.methods if m.method == "gogi-ads"]
    assert [anyr.compress_config(m).gamma for m in per_gamma] == [0.5, 0.7, 0.9]
    assert all(anyr.eval_prompt(m).template == "{question}" for m in per_gamma)
    from jaxcot.run.stages import ReportStage, RunContext

    assert ReportStage(RunContext(anyr, "/nowhere", print)).curves() == {  # the plot's two lines
        "gogi-ads-ratio: one student, asked for each ratio": [m.name for m in ratio_rows],
        "gogi-ads: a student per ratio": [m.name for m in per_gamma]}


def test_pipeline_end_to_end_and_resume(tiny_model, tmp_path):
    overrides = [
        f"model={tiny_model}", "name=t", f"runs_dir={tmp_path}", "data.n_train=24", "data.n_test=8",
        "generate.source=reference", "data.auc_samples=8", "score.batch_size=8",
        "methods=[{name: original, method: original},"
        " {name: gogi-skip, method: gogi-ads, gamma: 0.5, knobs: {ads: {calibrate: true}}}]",
        "student.max_steps=2", "student.batch_size=8", "student.data.max_len=256",
        "eval.max_new_tokens=12", "eval.batch_size=8", "eval.latency_samples=1",
    ]
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"), overrides)
    out = run_pipeline(cfg)
    root = out["root"]
    for f in ("traces.jsonl", "scored.jsonl", "auc.json", "sets/gogi-skip.jsonl", "report.md", "results.json",
              "report.html", "accuracy_vs_tokens_testbed.png", "students/gogi-skip/model/config.json",
              "eval/original.json"):
        assert os.path.exists(os.path.join(root, f)), f
    res = json.load(open(os.path.join(root, "results.json")))
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"original", "gogi-skip"}
    assert rows["original"]["retained"] == 1.0 and 0.3 < rows["gogi-skip"]["retained"] < 0.8
    assert rows["original"]["speedup"] == 1.0
    assert list(res["importance_auc"]) == ["gogi", "entropy", "self_info", "random"]
    # one training chain per method, the same question for each
    assert set(res["examples"]) == {"original", "gogi-skip"}
    assert len(res["examples"]["gogi-skip"]) < len(res["examples"]["original"])
    assert "One training chain, as each method writes it" in open(os.path.join(root, "report.md")).read()
    # Testbed runs carry the ground-truth 'oracle' importance: equations first (>= 1), others < 0.5.
    from jaxcot.testbed.roles import equation_oracle

    for rec in map(json.loads, open(os.path.join(root, "scored.jsonl"))):
        pieces, oracle = rec["scores"]["pieces"], rec["scores"]["oracle"]
        want = [x == 1.0 for x in equation_oracle(pieces)]
        assert any(want) and [x >= 1.0 for x in oracle] == want and all(0 <= x < 1.5 for x in oracle)
    summary = json.load(open(os.path.join(root, "sets", "gogi-skip.summary.json")))
    assert summary["config"]["tokens"]["units"] == "expression" and summary["config"]["ads"]["calibrate"]  # run + own
    compressed = [json.loads(line) for line in open(os.path.join(root, "sets", "gogi-skip.jsonl"))]
    assert all(ex["completion"].endswith(ex["completion"].split("The answer is")[-1]) for ex in compressed)
    assert all("The answer is" in ex["completion"] for ex in compressed)  # the answer is never compressed
    # A second run reuses every finished stage: nothing is recomputed.
    mtime = os.path.getmtime(os.path.join(root, "students", "gogi-skip", "model", "model.safetensors"))
    again = run_pipeline(cfg)
    assert os.path.getmtime(os.path.join(root, "students", "gogi-skip", "model", "model.safetensors")) == mtime
    assert set(again["timings"]) == {"report"}  # every other stage is done; the report is always rewritten
    # A changed setting on the same folder: what it affects is made again (and the run says why),
    # what it does not is reused, and config.yaml then describes the folder.
    import dataclasses

    import yaml

    said = []
    fewer = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_train=20))
    third = run_pipeline(fewer, say=said.append)
    assert any("train.jsonl" in m and "data.n_train: 24 -> 20" in m for m in said), said
    assert {"data", "generate", "score", "compress", "train", "eval", "report"} <= set(third["timings"])
    assert "auc" not in third["timings"]  # the importance AUC does not read the training questions
    assert len(open(os.path.join(root, "traces.jsonl")).read().splitlines()) == 20
    assert yaml.safe_load(open(os.path.join(root, "config.yaml")))["data"]["n_train"] == 20
    # Batch-1 latency: every student, the same questions, interleaved (default) or one by one.
    import dataclasses

    from jaxcot.eval.students import Student, measure_latency

    lat = json.load(open(os.path.join(root, "eval", "latency.json")))
    assert set(lat["latency_s"]) == set(rows) and lat["questions"] == 1
    test = [json.loads(line) for line in open(os.path.join(root, "data", "test.jsonl"))]
    students = [Student(n, os.path.join(root, "students", n, "model")) for n in rows]
    from jaxcot.generate import Generator

    calls = []
    real = Generator.generate_ids

    def counted(self, prompts, **kw):
        calls.append(tuple(map(tuple, prompts)))
        return real(self, prompts, **kw)

    for interleave, warm in ((True, True), (True, False), (False, True)):
        c = dataclasses.replace(cfg.eval, latency_samples=3, latency_interleave=interleave, latency_warm=warm)
        calls.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Generator, "generate_ids", counted)
            got = measure_latency(students, test, c)
        assert got["questions"] == 3 and set(got["times"]) == set(rows)
        assert all(len(t) == 3 and min(t) > 0 for t in got["times"].values())
        assert all(got["latency_s"][n] == pytest.approx(sum(t) / 3) for n, t in got["times"].items())
        # per student: one warm-up per prompt-length bucket, then per question a timed run, preceded
        # by an untimed run of the same question when taking turns with latency_warm
        per_question = 3 * len(rows) * (2 if interleave and warm else 1)
        assert per_question < len(calls) <= per_question + 3 * len(rows)
        if interleave and warm:
            tail = calls[-2 * 3 * len(rows):]
            assert all(tail[i] == tail[i + 1] for i in range(0, len(tail), 2))


def test_testbed_outside_the_teachers_task_is_named():
    import dataclasses

    from jaxcot.testbed.problems import TestbedConfig
    from jaxcot.testbed.teacher import check_teacher_task, teacher_path

    learned = json.load(open(os.path.join(teacher_path(), "teacher.json")))["config"]["testbed"]
    same = TestbedConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in learned.items()})
    assert check_teacher_task(same) is None
    out = check_teacher_task(dataclasses.replace(same, max_value=same.max_value + 49))
    assert "warning" in out and f"max_value={same.max_value + 49}" in out and f"teacher: {same.max_value}" in out


def test_grpo_after_a_student_through_jaxcot_run(tiny_model, tmp_path):
    """An `rl:` section follows a row's student by GRPO; the table shows it before and after."""
    overrides = [
        f"model={tiny_model}", "name=g", f"runs_dir={tmp_path}", "data.n_train=8", "data.n_test=4",
        "generate.source=reference", "data.auc_samples=4", "score.batch_size=8",
        "methods=[{name: original, method: original}]", "student.max_steps=1", "student.batch_size=8",
        "student.data.max_len=256", "eval.max_new_tokens=12", "eval.batch_size=4", "eval.latency_samples=1",
        "rl={methods: [original], grpo: {max_steps: 2, prompts_per_step: 2, num_generations: 4, max_new_tokens: 12,"
        " lora: {rank: 4, alpha: 8.0}, optim: {lr: 1.0e-3}, checkpoint: {every: 1}, log: {tensorboard: false},"
        " progress: false, rewards: [{name: correct, weight: 2.0}, {name: length, weight: -1.0, args: {limit: 6}}]}}",
    ]
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"), overrides)
    gc = cfg.grpo_config(cfg.methods[0], "/r")
    assert (gc.init_from, gc.data.path, gc.export_dir) == ("/r/students/original/model", "/r/data/train.jsonl",
                                                           "/r/students/original-grpo/model")
    out = run_pipeline(cfg)
    root = out["root"]
    assert "rl" in out["timings"]
    res = json.load(open(os.path.join(root, "results.json")))
    assert [r["method"] for r in res["rows"]] == ["original", "original+grpo"]
    metrics = [json.loads(x) for x in open(os.path.join(root, "students", "original-grpo", "run", "metrics.jsonl"))]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["ratio_first_iteration"] == 1.0 for m in metrics)
    assert "original+grpo: GRPO from the student of original, 2 steps" in open(os.path.join(root, "report.md")).read()
    again = run_pipeline(cfg)
    assert set(again["timings"]) == {"report"}  # the GRPO policy is reused like any student
    with pytest.raises(ConfigError, match=r"^rl.methods: \['nope'\] name no row"):
        load_config(RunConfig, None, ["rl={methods: [nope]}"])
    with pytest.raises(ConfigError, match=r"^rl.grpo.init_from: is set by the run"):
        load_config(RunConfig, None, ["rl={methods: [original], grpo: {init_from: x}}"])
