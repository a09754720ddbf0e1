"""`evaluate_model` (`jaxcot eval`), and the run's eval stage going through it, on the shipped
testbed teacher."""

import dataclasses
import json
import shutil

import pytest

from jaxcot.eval.students import EvalConfig, evaluate_model
from jaxcot.io import DataError
from jaxcot.testbed.teacher import teacher_path

CFG = EvalConfig(max_new_tokens=48, batch_size=4, latency_samples=2)


@pytest.fixture(scope="module")
def questions():
    from jaxcot.testbed.problems import generate

    return [{"id": it["id"], "question": it["question"], "gold": it["gold"]} for it in generate(4, 5)]


def test_evaluate_model_writes_json_and_table_and_reuses_them(tmp_path, questions, monkeypatch):
    import jaxcot.eval.students as students

    out = tmp_path / "teacher.json"
    res = evaluate_model(teacher_path(), questions, CFG, str(out), say=lambda m: None)
    assert res["n"] == 4 and 0 <= res["accuracy"] <= 1 and res["mean_cot_tokens"] > 0
    assert res["latency_s"] > 0 and res["throughput_tok_s"] > 0 and "act_ratio" not in res  # no baseline
    assert json.loads(out.read_text()) == res
    table = (tmp_path / "teacher.md").read_text().splitlines()
    assert table[0].startswith("| model | n | accuracy | CoT tokens | ActRatio | latency (s, b=1) |")
    assert table[2].startswith("| teacher | 4 | ") and table[2].endswith(" | - |")  # no speedup without a baseline

    def boom(*a, **k):
        raise AssertionError("an up-to-date result was evaluated again")

    with monkeypatch.context() as mp:
        mp.setattr(students, "evaluate_student", boom)
        assert evaluate_model(teacher_path(), questions, CFG, str(out), say=lambda m: None) == res

    base = tmp_path / "base.json"
    base.write_text(json.dumps(dict(res, mean_cot_tokens=2 * res["mean_cot_tokens"], latency_s=2 * res["latency_s"])))
    vs = evaluate_model(teacher_path(), questions, dataclasses.replace(CFG, baseline=str(base)),
                        str(tmp_path / "vs.json"), say=lambda m: None)
    assert vs["act_ratio"] == pytest.approx(vs["mean_cot_tokens"] / (2 * res["mean_cot_tokens"]))
    assert vs["speedup"] == pytest.approx(2 * res["latency_s"] / vs["latency_s"])

    with pytest.raises(DataError, match=r"^q.jsonl: question testbed-5-1 has no gold answer to grade against$"):
        evaluate_model(teacher_path(), [questions[0], {"id": "testbed-5-1", "question": "?"}], CFG,
                       str(tmp_path / "x.json"), source="q.jsonl")


def test_jaxcot_eval_command(tmp_path, questions, capsys):
    from jaxcot.cli import main

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions[:2]))
    out = tmp_path / "e" / "teacher.json"
    assert main(["eval", "--model", teacher_path(), "--data", str(data), "--out", str(out), "--name", "t",
                 "max_new_tokens=48", "batch_size=2", "latency_samples=1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| model | n | accuracy |") and "| t | 2 | " in printed
    assert json.loads(out.read_text())["n"] == 2 and (tmp_path / "e" / "teacher.md").read_text() == printed


def test_the_run_eval_stage_goes_through_evaluate_model(tmp_path, questions, monkeypatch):
    """EvalStage -> evaluate_students -> evaluate_model per student (no latency pass: the run times
    its students together); a folder whose fingerprints were recorded before EvalConfig had
    grader / prompt / baseline is still up to date."""
    import jaxcot.eval.students as students
    from jaxcot.config import load_config
    from jaxcot.io import atomic_write_jsonl
    from jaxcot.provenance import meta_path
    from jaxcot.run import RunConfig
    from jaxcot.run.stages import EvalStage, RunContext

    cfg = load_config(RunConfig, None, ["name=e", f"runs_dir={tmp_path}",
                                        "methods=[{name: original, method: original}]",
                                        "eval={max_new_tokens: 48, batch_size: 4, latency_samples: 1}"])
    root = tmp_path / "run"
    atomic_write_jsonl(str(root / "data" / "test.jsonl"), questions)
    shutil.copytree(teacher_path(), root / "students" / "original" / "model")
    calls = []
    real = students.evaluate_model

    def counted(student, *a, **k):
        calls.append((student.name, k.get("latency")))
        return real(student, *a, **k)

    monkeypatch.setattr(students, "evaluate_model", counted)
    stage = EvalStage(RunContext(cfg, str(root), say=lambda m: None))
    assert not stage.done()
    stage.run()
    assert calls == [("original", False)] and stage.done()
    assert (root / "eval" / "original.md").exists() and (root / "eval" / "latency.json").exists()
    for rel in ("eval/latency.json", "eval/original.json"):
        meta = json.loads(open(meta_path(root / rel)).read())
        for key in ("grader", "prompt", "baseline"):
            meta["settings"].get("eval", {}).pop(key, None)
        open(meta_path(root / rel), "w").write(json.dumps(meta))
    assert stage.done()
