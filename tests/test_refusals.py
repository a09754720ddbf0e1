"""A refused command loses nothing and leaves nothing: `--overwrite` checks everything and takes the
lock before it touches the old output, which stays until its replacement is complete; a command
that fails before writing leaves no record and no partial file; a lock file is never followed
(a symbolic link) nor overwritten when jaxcot did not make it -- for a command's output, a
training folder and a run folder alike; zero usable traces is one error at the stage that finds it."""

import json
import os
import re

import pytest

from jaxcot.cli import main

PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d \[jaxcot\.\w+ p\d+\] ")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_folder):
    """The tiny model, 4 questions, their reference traces and scores."""
    from jaxcot.generate.traces import reference_trace
    from jaxcot.io import atomic_write_jsonl
    from jaxcot.testbed.problems import generate

    d = tmp_path_factory.mktemp("refusals")
    problems = list(generate(4, seed=5))
    atomic_write_jsonl(d / "q.jsonl", [{"id": p["id"], "question": p["question"], "answer": f"#### {p['gold']}"}
                                       for p in problems])
    atomic_write_jsonl(d / "traces.jsonl", [reference_trace(p) for p in problems])
    assert main(["score", "--model", tiny_model_folder, "--traces", str(d / "traces.jsonl"),
                 "--out", str(d / "scored.jsonl"), "--batch-size", "4", "--layer", "1"]) == 0
    return d


def run_cli(argv, capsys):
    """(exit status, stderr lines but the progress log's) of an in-process `jaxcot` call."""
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    return code, err


def files(folder) -> dict:
    """{name: bytes} of the files in `folder` (not below it)."""
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, f))}


def _commands(world, model, out):
    """Each stage command writing `out`, as (name, argv)."""
    return {
        "generate": ["generate", f"--model={model}", f"--data={world}/q.jsonl", f"--out={out}", "--max-new-tokens=2"],
        "score": ["score", f"--model={model}", f"--traces={world}/traces.jsonl", f"--out={out}", "--layer", "1"],
        "compress": ["compress", f"--scored={world}/scored.jsonl", "--method", "original", f"--out={out}"],
    }


@pytest.mark.parametrize("command", ["generate", "score", "compress"])
def test_overwrite_refused_loses_nothing(world, tiny_model_folder, tmp_path, capsys, command):
    """`--overwrite` with a mistyped model (compress: scores file), or while another process
    writes the output, is refused with the finished output, its meta and the other writer's
    partial file as they were."""
    from jaxcot.io import output_lock

    out = tmp_path / "out.jsonl"
    argv = _commands(world, tiny_model_folder, out)[command]
    assert run_cli(argv, capsys)[0] == 0
    before = files(tmp_path)
    assert "out.jsonl.meta.json" in before and "out.jsonl" in before
    mistyped = tiny_model_folder if command != "compress" else f"{world}/scored.jsonl"  # compress reads no model
    typo = [a.replace(mistyped, mistyped + "-typo") for a in argv]
    code, err = run_cli(typo + ["--overwrite"], capsys)
    assert code == 2 and len(err) == 1 and "-typo" in err[0], err
    assert files(tmp_path) == before
    # another process holds the lock and has written part of the new output
    (tmp_path / "out.jsonl.partial").write_text('{"id": "live"}\n')
    during = files(tmp_path)
    with output_lock(out):
        code, err = run_cli(argv + ["--overwrite"], capsys)
    assert code == 2 and len(err) == 1 and f"is being written by process {os.getpid()}" in err[0], err
    assert files(tmp_path) == during


def test_overwrite_replaces_only_when_the_new_output_is_complete(world, tiny_model_folder, tmp_path, capsys):
    """The old output (and its meta) stay until the new one is written; a replacement that fails
    leaves them as they were, with no partial file; one that succeeds swaps output and meta."""
    out = tmp_path / "t.jsonl"
    base = ["generate", f"--data={world}/q.jsonl", f"--out={out}", "--batch-size=4"]
    assert run_cli(base + [f"--model={tiny_model_folder}", "--max-new-tokens=2"], capsys)[0] == 0
    before = files(tmp_path)
    broken = tmp_path / "broken"  # a model folder that exists but does not load
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    base += ["--max-new-tokens=3"]
    code, err = run_cli(base + [f"--model={broken}", "--overwrite"], capsys)
    assert code == 2 and len(err) == 1, err
    assert files(tmp_path) == before  # no partial file, the old meta
    assert run_cli(base + [f"--model={tiny_model_folder}", "--overwrite"], capsys)[0] == 0
    after = files(tmp_path)
    assert set(after) == {"t.jsonl", "t.jsonl.meta.json"}
    assert json.loads(after["t.jsonl.meta.json"])["settings"]["generate"]["max_new_tokens"] == 3
    assert after["t.jsonl"] != before["t.jsonl"]  # chains of 3 tokens, not 2
    # with the same settings, --overwrite makes it again (and a finished one is not redone without it)
    code, err = run_cli(base + [f"--model={tiny_model_folder}"], capsys)
    assert code == 0 and "is complete" in err[-1]
    assert run_cli(base + [f"--model={tiny_model_folder}", "--overwrite"], capsys)[0] == 0
    assert set(files(tmp_path)) == {"t.jsonl", "t.jsonl.meta.json"}


def test_a_replacement_killed_midway_keeps_the_old_output_and_its_record(tmp_path):
    """A kill while a finished output is being replaced (records already in its partial file)
    leaves the old file and its record: claimed again with the old settings it is up to date (the
    unfinished replacement dropped); with the new ones the replacement resumes, and only when it
    is complete does the new record take the old one's place."""
    from jaxcot.io import ResumableJsonl
    from jaxcot.provenance import Fingerprint, claim, claimed, recorded, up_to_date

    out = tmp_path / "o.jsonl"
    old, new = Fingerprint.of({"k": 1}), Fingerprint.of({"k": 2})
    with claimed(out, old), ResumableJsonl(out, ids=[1, 2]) as w:
        w.write({"id": 1, "v": "old"}), w.write({"id": 2, "v": "old"})
    old_bytes, old_meta = out.read_bytes(), recorded(out)

    class Killed(BaseException):
        pass

    def interrupted_replacement():
        with pytest.raises(Killed), claimed(out, new, replace=True), ResumableJsonl(out, ids=[1, 2]) as w:
            w.write({"id": 1, "v": "new"})
            raise Killed

    interrupted_replacement()
    assert out.read_bytes() == old_bytes and recorded(out) == old_meta
    claim(out, old)  # the old settings: nothing to make, the half-made replacement dropped
    assert up_to_date(out, old) and sorted(os.listdir(tmp_path)) == ["o.jsonl", "o.jsonl.meta.json"]
    interrupted_replacement()
    with claimed(out, new), ResumableJsonl(out, ids=[1, 2]) as w:  # the new settings: resumes
        assert w.pending == [2]
        w.write({"id": 2, "v": "new"})
    assert [json.loads(line)["v"] for line in out.read_text().splitlines()] == ["new", "new"]
    assert up_to_date(out, new) and not up_to_date(out, old)
    assert sorted(os.listdir(tmp_path)) == ["o.jsonl", "o.jsonl.meta.json"]


def test_a_refused_score_leaves_nothing_behind(world, tiny_model_folder, tmp_path, capsys):
    """`score --layer 99` (a 2-layer model) is refused and leaves neither meta nor partial file, so
    the corrected command runs."""
    out = tmp_path / "s.jsonl"
    argv = ["score", f"--model={tiny_model_folder}", f"--traces={world}/traces.jsonl", f"--out={out}"]
    code, err = run_cli(argv + ["--layer", "99"], capsys)
    assert code == 2 and len(err) == 1 and "99" in err[0], err
    assert os.listdir(tmp_path) == []
    assert run_cli(argv + ["--layer", "1"], capsys)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["s.jsonl", "s.jsonl.meta.json"]


def test_a_failed_compress_keeps_what_it_would_replace(world, tmp_path, capsys):
    """compress: with no record left to compress the old set, summary and meta stay as they were."""
    out = tmp_path / "set.jsonl"
    argv = ["compress", "--method", "original", f"--out={out}"]
    assert run_cli(argv + [f"--scored={world}/scored.jsonl"], capsys)[0] == 0
    before = files(tmp_path)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps({**json.loads(line), "correct": False}) + "\n"
                             for line in open(world / "scored.jsonl")))
    before["wrong.jsonl"] = wrong.read_bytes()
    code, err = run_cli(argv + [f"--scored={wrong}", "--overwrite"], capsys)
    assert code == 2 and len(err) == 1 and "no record to compress" in err[0], err
    assert files(tmp_path) == before


# -- locks ------------------------------------------------------------------------------------------


def _lock_is_refused_untouched(lock, enter):
    """A lock file that is a symbolic link, a hard link, or a file holding something else than a
    PID is refused by `enter()` (which takes the lock), its target untouched."""
    from jaxcot.io import LockError

    victim = os.path.join(os.path.dirname(lock), "victim.txt")
    for how, pattern in (("symlink", "is a symbolic link"), ("hardlink", "not a small plain file"),
                         ("text", "holds something other than a process id")):
        with open(victim, "w") as f:
            f.write("precious\n")
        if how == "symlink":
            os.symlink(victim, lock)
        elif how == "hardlink":
            os.link(victim, lock)
        else:
            with open(lock, "w") as f:
                f.write("precious\n")
        with pytest.raises(LockError, match=pattern) as e:
            enter()
        assert "\n" not in str(e.value) and os.path.basename(lock) in str(e.value)
        assert open(victim).read() == "precious\n" and open(lock).read() == "precious\n", how
        os.remove(lock)


def _lock_is_exclusive_and_taken_over_when_stale(lock, enter):
    """A second holder is refused naming the first; a lock left by a dead process is taken over
    (and removed on release)."""
    from jaxcot.io import LockError, output_lock

    with output_lock(lock[: -len(".lock")]):
        with pytest.raises(LockError, match=rf"is being written by process {os.getpid()} \(lock .*\.lock\)"):
            enter()
    with open(lock, "w") as f:
        f.write("999999999")  # no process holds it
    enter()
    assert not os.path.lexists(lock)


def test_output_lock_never_follows_nor_overwrites(tmp_path, world, tiny_model_folder, capsys):
    from jaxcot.io import output_lock

    out = tmp_path / "out.jsonl"

    def enter():
        with output_lock(out):
            pass

    _lock_is_exclusive_and_taken_over_when_stale(str(out) + ".lock", enter)
    _lock_is_refused_untouched(str(out) + ".lock", enter)
    # through a command: one line, nothing written
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.symlink(victim, str(out) + ".lock")
    code, err = run_cli(_commands(world, tiny_model_folder, out)["generate"], capsys)
    assert code == 2 and len(err) == 1 and "symbolic link" in err[0], err
    assert victim.read_text() == "precious\n" and not out.exists()


def test_training_folder_lock(tmp_path, tiny_model_folder):
    """`jaxcot train`'s output folder (`local_run`): one holder at a time, a stale lock taken
    over, a symbolic link or foreign file refused untouched."""
    from jaxcot.train.config import TrainConfig
    from jaxcot.train.runtime import local_run

    cfg = TrainConfig(output_dir=str(tmp_path / "sft"), init_from=tiny_model_folder)

    def enter():
        with local_run(cfg, "train", output_dir=cfg.output_dir):
            assert open(cfg.output_dir + ".lock").read() == str(os.getpid())

    _lock_is_exclusive_and_taken_over_when_stale(cfg.output_dir + ".lock", enter)
    _lock_is_refused_untouched(cfg.output_dir + ".lock", enter)


def test_run_folder_lock(tmp_path, tiny_model_folder):
    """`jaxcot run`'s folder: one run at a time, a stale lock taken over, a symbolic link or
    foreign file refused untouched (and no stage run)."""
    from jaxcot.config import load_config
    from jaxcot.run import RunConfig, run_pipeline

    cfg = load_config(RunConfig, None, [f"model={tiny_model_folder}", "name=r", f"runs_dir={tmp_path}",
                                        "data.n_train=2", "data.n_test=2", "stages=[data]"])
    lock = str(tmp_path / "r.lock")

    def enter():
        run_pipeline(cfg, say=lambda m: None)

    _lock_is_exclusive_and_taken_over_when_stale(lock, enter)
    assert os.path.exists(tmp_path / "r" / "data" / "train.jsonl")
    _lock_is_refused_untouched(lock, enter)


# -- zero usable traces ---------------------------------------------------------------------------


def test_zero_usable_traces_is_one_error_at_the_stage_that_finds_it(tmp_path, tiny_model_folder):
    """A model that solves nothing (`jaxcot run`): the score stage says so, naming traces.jsonl,
    and claims nothing; no later stage runs. (A scored file with no correct record: compress says
    so, test_a_failed_compress_keeps_what_it_would_replace.)"""
    from jaxcot.config import load_config
    from jaxcot.io import DataError
    from jaxcot.run import RunConfig, run_pipeline

    base = [f"model={tiny_model_folder}", "name=z", f"runs_dir={tmp_path}", "data.n_train=4", "data.n_test=2",
            "generate.max_new_tokens=3", "generate.batch_size=4", "score.batch_size=4",
            "methods=[{name: original, method: original}]"]
    root = tmp_path / "z"
    cfg = load_config(RunConfig, None, base + ["stages=[data, generate, score, compress]"])
    with pytest.raises(DataError, match=r"traces\.jsonl: no trace to score \(left out 4 of 4"):
        run_pipeline(cfg, say=lambda m: None)
    assert not any(n.startswith("scored") for n in os.listdir(root)) and not (root / "sets").exists()
