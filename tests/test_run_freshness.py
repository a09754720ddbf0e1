"""`jaxcot run` reuses nothing it cannot vouch for (issue 30, scopes 2 and 3).

A stage runs only when everything it reads, and everything that was made from, is up to date
with the config; settings changed for a stage the run leaves out are refused (config.yaml would
describe settings no stage applied); an output's own bytes are part of "done" (its meta records
their digest when it is finished, and a mismatch remakes it, saying why)."""

import json
import os
import shutil

import pytest

from jaxcot.config import load_config
from jaxcot.run import RunConfig, run_pipeline
from jaxcot.run.runner import StageInputMissing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(model: str, runs_dir, *more: str) -> RunConfig:
    overrides = [
        f"model={model}", "name=f", f"runs_dir={runs_dir}", "data.n_train=8", "data.n_test=4",
        "generate.source=reference", "data.auc_samples=4", "score.batch_size=8",
        "methods=[{name: original, method: original}]", "student.max_steps=2", "student.batch_size=8",
        "student.data.max_len=256", "eval.max_new_tokens=12", "eval.batch_size=4", "eval.latency_samples=1",
        *more,
    ]
    return load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"), overrides)


@pytest.fixture(scope="module")
def finished(tiny_model_folder, tmp_path_factory):
    """A finished tiny run (every stage); each test works on a copy of it."""
    runs = tmp_path_factory.mktemp("runs")
    run_pipeline(_config(tiny_model_folder, runs))
    return tiny_model_folder, str(runs / "f")


@pytest.fixture
def run(finished, tmp_path):
    """(make a config for the copy of the finished run: extra overrides, root of the copy)"""
    model, src = finished
    shutil.copytree(src, tmp_path / "f")
    return (lambda *more: _config(model, tmp_path, *more)), str(tmp_path / "f")


def _bytes(root: str, *names: str) -> dict:
    return {n: open(os.path.join(root, n), "rb").read() for n in names}


def test_a_copied_finished_run_is_done(run):
    make, root = run
    assert set(run_pipeline(make())["timings"]) == {"report"}


# -- scope 2: what a stage reports is up to date, transitively; config.yaml holds applied settings --

def test_report_refuses_settings_the_students_were_not_trained_with(run):
    make, root = run
    before = _bytes(root, "report.md", "results.json", "config.yaml")
    cfg = make("stages=[report]", "student.max_steps=6", "student.optim.lr=0.05")
    with pytest.raises(StageInputMissing) as e:
        run_pipeline(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "students/original/model" in msg and "stage train" in msg, msg
    assert "student.max_steps: 2 -> 6" in msg and "student.optim.lr: 0.002 -> 0.05" in msg, msg
    assert _bytes(root, "report.md", "results.json", "config.yaml") == before


def test_settings_of_a_stage_not_run_are_refused_not_written_to_config_yaml(run):
    import yaml

    make, root = run
    before = _bytes(root, "config.yaml", "traces.jsonl.meta.json")
    with pytest.raises(StageInputMissing) as e:
        run_pipeline(make("stages=[data]", "generate.max_new_tokens=50"))
    msg = str(e.value)
    assert "\n" not in msg and "traces.jsonl" in msg and "stage generate" in msg, msg
    assert "generate.max_new_tokens:" in msg and "-> 50" in msg, msg
    assert _bytes(root, "config.yaml", "traces.jsonl.meta.json") == before
    # with the stage that applies it, the setting is made and config.yaml then says so
    out = run_pipeline(make("stages=[data, generate]", "generate.max_new_tokens=50"))
    assert "generate" in out["timings"]
    assert yaml.safe_load(open(os.path.join(root, "config.yaml")))["generate"]["max_new_tokens"] == 50


def test_the_report_records_what_it_describes_and_is_not_left_behind(run):
    """report.md, results.json and report.html carry a meta like every output (the settings the
    report states, the digests of what it read, their own bytes); a run that retrains the students
    but leaves the report out is refused, since report.md (and config.yaml) would then disagree."""
    from jaxcot.provenance import content_differences, recorded

    make, root = run
    for rel in ("report.md", "results.json", "report.html"):
        rec = recorded(os.path.join(root, rel))
        assert rec["settings"]["report"]["student"]["max_steps"] == 2 and "eval/original.json" in rec["inputs"], rel
        assert content_differences(os.path.join(root, rel)) == [], rel
    before = _bytes(root, "report.md", "config.yaml", "students/original/model.meta.json")
    with pytest.raises(StageInputMissing) as e:
        run_pipeline(make("stages=[train]", "student.max_steps=3"))
    msg = str(e.value)
    assert "\n" not in msg and "report.md" in msg and "stage report" in msg and "max_steps: 2 -> 3" in msg, msg
    assert _bytes(root, "report.md", "config.yaml", "students/original/model.meta.json") == before
    run_pipeline(make("stages=[train, eval, report]", "student.max_steps=3"))
    assert recorded(os.path.join(root, "report.md"))["settings"]["report"]["student"]["max_steps"] == 3
    assert not [f for f in os.listdir(root) if ".partial" in f]


def test_a_stage_refuses_when_what_its_inputs_were_made_from_is_stale(run):
    """Fewer training questions, then only data and generate: the traces are new, so the scores,
    sets, students and eval results made from the old ones no longer describe this config. The
    report's direct inputs (eval results, sets) are each up to date with what they read; what they
    were made from is not, and the report names the stage to run."""
    make, root = run
    run_pipeline(make("stages=[data, generate]", "data.n_train=7"))
    before = _bytes(root, "report.md", "results.json")
    with pytest.raises(StageInputMissing) as e:
        run_pipeline(make("stages=[report]", "data.n_train=7"))
    msg = str(e.value)
    assert "\n" not in msg and "run stage score first" in msg and "scored.jsonl" in msg, msg
    assert _bytes(root, "report.md", "results.json") == before


# -- scope 3: an output's own bytes are part of "done" --

def test_a_truncated_traces_file_is_made_again(run):
    make, root = run
    path = os.path.join(root, "traces.jsonl")
    full = open(path).read().splitlines(keepends=True)
    assert len(full) == 8
    with open(path, "w") as f:
        f.writelines(full[:-1])
    said = []
    out = run_pipeline(make(), say=said.append)
    assert any("traces.jsonl" in m and "8 records recorded when it was made, 7 now" in m for m in said), said
    assert open(path).read().splitlines(keepends=True) == full
    # the traces are what they were: nothing after them is remade from 7 of 8 questions
    assert set(out["timings"]) == {"generate", "report"}


def test_a_hand_edited_training_set_is_made_again(run):
    make, root = run
    path = os.path.join(root, "sets", "original.jsonl")
    good = open(path).read()
    recs = [json.loads(x) for x in good.splitlines()]
    recs[0]["completion"] = "The answer is 7"
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    said = []
    out = run_pipeline(make(), say=said.append)
    assert any("sets/original.jsonl" in m and "bytes recorded when it was made" in m for m in said), said
    assert open(path).read() == good
    assert set(out["timings"]) == {"compress", "report"}  # the student was trained on the set as made


def test_a_student_without_its_weights_is_not_trained(run):
    make, root = run
    weights = os.path.join(root, "students", "original", "model", "model.safetensors")
    good = open(weights, "rb").read()
    evals = _bytes(root, "eval/original.json", "eval/latency.json")
    for broken in (good[: len(good) // 2], None):  # truncated, then missing
        if broken is None:
            os.remove(weights)
        else:
            open(weights, "wb").write(broken)
        with pytest.raises(StageInputMissing) as e:
            run_pipeline(make("stages=[eval, report]"))
        msg = str(e.value)
        assert "\n" not in msg and "students/original/model" in msg and "run stage train first" in msg, msg
        assert _bytes(root, "eval/original.json", "eval/latency.json") == evals  # the good results are kept
    said = []
    out = run_pipeline(make(), say=said.append)
    assert "train" in out["timings"] and os.path.exists(weights)
    assert json.load(open(os.path.join(root, "eval", "original.json")))


def test_outputs_record_their_content_when_finished(tmp_path):
    from jaxcot.provenance import Fingerprint, StaleOutput, claim, claimed, content_differences, recorded, up_to_date

    out = tmp_path / "o.jsonl"
    fp = Fingerprint.of({"k": 1})
    with claimed(out, fp):
        out.write_text('{"id": 1}\n{"id": 2}\n')
    rec = recorded(out)
    assert rec["content"]["records"] == 2 and rec["content"]["bytes"] == out.stat().st_size
    assert up_to_date(out, fp) and content_differences(out) == []
    out.write_text('{"id": 1}\n')
    assert not up_to_date(out, fp)
    assert content_differences(out) == ["2 records recorded when it was made, 1 now"]
    with pytest.raises(StaleOutput, match="2 records recorded when it was made, 1 now"):
        claim(out, fp)
    folder = tmp_path / "m"
    with claimed(folder, fp):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"w" * 10)
    assert up_to_date(folder, fp)
    (folder / "model.safetensors").unlink()
    assert content_differences(folder) == ["model.safetensors missing"] and not up_to_date(folder, fp)
