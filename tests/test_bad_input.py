"""Bad input is one clear line (issue 30, scopes 5 and 8): numbers that are not finite, ranges,
duplicate YAML keys, settings checked at load (model sizes, regexes, grader and reward modules),
damaged files (meta, partial, checkpoints, weights), a read-only cache and a full disk."""

import errno
import json
import logging
import os
import re
import shutil

import pytest

from jaxcot.cli import main
from jaxcot.config import ConfigError, load_config
from jaxcot.io import DataError, ResumableJsonl

PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d \[jaxcot\.\w+ p\d+\] ")


def run_cli(argv, capsys):
    """(exit status, stderr lines but the progress log's) of an in-process `jaxcot` call."""
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    return code, err


def one_line(argv, capsys, pattern):
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    assert "--debug" in err[0]
    return err[0]


ROW = ["methods=[{name: a}]", "rl.methods=[a]"]
FINITE = r"must be a finite number"
CONFIG_ERRORS = [  # (name, argv, regex of the line): each refused at load, before any work
    ("gamma nan", ["compress", "--gamma", "nan"], r"gamma: " + FINITE),
    ("gamma inf", ["compress", "--gamma", "inf"], r"gamma: " + FINITE),
    ("temperature nan", ["generate", "--temperature", "nan"], r"temperature: " + FINITE),
    ("top_p nan", ["generate", "--top-p", "nan"], r"top_p: " + FINITE),
    ("top_p inf", ["generate", "top_p=.inf"], r"top_p: " + FINITE),
    ("ads beta nan", ["compress", "ads.beta=.nan"], r"ads.beta: " + FINITE),
    ("ads trace_beta -inf", ["compress", "ads.trace_beta=-.inf"], r"ads.trace_beta: " + FINITE),
    ("kappa nan", ["compress", "step.kappa=nan"], r"step.kappa: " + FINITE),
    ("lr nan", ["train", "init_from=x", "optim.lr=nan"], r"optim.lr: " + FINITE),
    ("lora alpha inf", ["train", "init_from=x", "lora.alpha=.inf"], r"lora.alpha: " + FINITE),
    ("row gamma nan", ["run", "methods=[{name: a, method: gogi-ads, gamma: .nan}]"], r"methods\[0\].gamma: " + FINITE),
    ("grpo beta nan", ["run", *ROW, "rl.grpo.beta=nan"], r"rl.grpo.beta: " + FINITE),
    ("grpo temperature nan", ["run", *ROW, "rl.grpo.sampling.temperature=nan"],
     r"rl.grpo.sampling.temperature: " + FINITE),
    ("goal_prob 7", ["run", "data.testbed.goal_prob=7"], r"data.testbed.goal_prob: must be >= 0 and <= 1, got 7"),
    ("hedge_prob nan", ["run", "data.testbed.hedge_prob=nan"], r"data.testbed.hedge_prob: " + FINITE),
    ("op weight nan", ["run", "data.testbed.op_weights=[.nan, 1, 1]"], r"data.testbed.op_weights\[0\]: " + FINITE),
    ("op weights negative", ["run", "data.testbed.op_weights=[-1, 1, 1]"], r"data.testbed.op_weights: must be"),
    ("model hidden size", ["train", "tokenizer=word", "model={family: llama, vocab_size: 0, hidden_size: -64, "
                           "intermediate_size: 64, num_layers: 2, num_heads: 2, num_kv_heads: 1, head_dim: 16}"],
     r"model.hidden_size: must be >= 1, got -64"),
    ("model kv heads zero", ["train", "tokenizer=word", "model={family: llama, vocab_size: 0, hidden_size: 32, "
                             "intermediate_size: 64, num_layers: 2, num_heads: 2, num_kv_heads: 0, head_dim: 16}"],
     r"model.num_kv_heads: must be >= 1, got 0"),
    ("teacher hidden size", ["testbed", "teacher", "model.hidden_size=-64"],
     r"model.hidden_size: must be >= 1, got -64 \(on the command line\)"),
    ("teacher heads zero", ["testbed", "teacher", "model.num_heads=0"], r"model.num_heads: must be >= 1, got 0"),
    ("step pattern", ["compress", "step.step_pattern=(ab"],
     r"step.step_pattern: is not a valid regular expression .*'\(ab'"),
    ("grader module", ["run", "data.grader=nosuch.mod:f"], r"data.grader: grader 'nosuch.mod:f': cannot import"),
    ("grader attribute", ["compress", "filter.grader=json:nosuch"], r"filter.grader: .*has no attribute 'nosuch'"),
    ("reward module", ["run", *ROW, "rl.grpo.rewards=[{name: 'nosuch.mod:f'}]"],
     r"rl.grpo.rewards\[0\].name: reward 'nosuch.mod:f': cannot import 'nosuch.mod'"),
    ("reward's grader", ["run", *ROW, "rl.grpo.rewards=[{name: correct, args: {grader: 'nosuch.mod:f'}}]"],
     r"rl.grpo.rewards\[0\].args.grader: grader 'nosuch.mod:f': cannot import"),
    ("duplicate key in a value", ["compress", "ads={beta: 0.1, beta: 0.2}"], r"ads: .*duplicate key 'beta'"),
]


@pytest.mark.parametrize("name,argv,pattern", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_bad_setting_is_one_line_at_load(capsys, name, argv, pattern):
    words = 2 if argv[0] == "testbed" else 1  # the command (`testbed teacher`: two words)
    one_line([*argv[:words], "--print-config", *argv[words:]], capsys, pattern)


def test_a_flag_of_the_wrong_type_is_one_line(capsys):
    """argparse's own refusals (`--max-new-tokens 1e9`, an unknown choice) are one line too."""
    for argv, pattern in ((["generate", "--print-config", "--max-new-tokens", "1e9"],
                           r"--max-new-tokens: invalid int value: '1e9' \(--help shows the usage\)"),
                          (["generate", "--print-config", "--dtype", "f16"], r"--dtype: invalid choice: 'f16'")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.splitlines()
        assert e.value.code == 2 and len(err) == 1 and re.search(pattern, err[0]), err


@pytest.mark.parametrize("override,pattern", [("mfu=nan", "mfu: " + FINITE),
                                              ("decode_rows=0", "decode_rows: must be >= 1"),
                                              ("score_layer=-1", "score_layer: must be >= 0")])
def test_plan_settings_are_checked(override, pattern):
    from jaxcot.run.plan import PlanConfig

    with pytest.raises(ConfigError, match=pattern):
        load_config(PlanConfig, None, [override])


def test_duplicate_yaml_key_names_key_and_line(tmp_path, capsys):
    from jaxcot.run.config import RunConfig

    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ndata:\n  n_train: 3\n  n_test: 2\n  n_train: 4\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:5: .*duplicate key 'n_train' \(first given on line 3\)"):
        load_config(RunConfig, path)
    one_line(["run", "--print-config", "--config", path], capsys, r"dup.yaml:5: .*duplicate key 'n_train'")
    path.write_text("name: a\ndata:\n  n_train: 3\nmethods: [{name: x}, {name: y}]\n")  # equal keys in two mappings
    assert load_config(RunConfig, path).data.n_train == 3


def test_a_grader_module_is_imported_at_load(tmp_path, monkeypatch):
    """A grader or reward given as module:function is imported when the config loads; one that
    exists loads."""
    from jaxcot.compress.config import CompressConfig
    from jaxcot.rl.rewards import RewardSpec

    (tmp_path / "my_grader_mod.py").write_text("def grade(answer, gold):\n    return answer == gold\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_config(CompressConfig, None, ["filter.grader=my_grader_mod:grade"]).filter.grader
    assert RewardSpec("my_grader_mod:grade").name == "my_grader_mod:grade"
    with pytest.raises(ConfigError, match="is a str, not a function"):
        RewardSpec("os:sep")


# -- damaged files -------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["[1, 2]", '"x"', "3", '{"no_id": 1}'])
def test_non_object_line_in_a_partial_file_names_file_and_line(tmp_path, line):
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.partial").write_text('{"id": "a"}\n' + line + "\n")
    with pytest.raises(DataError, match=r"out.jsonl.partial:2: expected a JSON object with an 'id' field.*remove it"):
        with ResumableJsonl(out, ids=["a", "b"]):
            pass


@pytest.mark.parametrize("text", ["[1, 2]", '"x"', "not json"])
def test_non_object_meta_file_is_an_unreadable_record(tmp_path, text):
    from jaxcot.provenance import Fingerprint, StaleOutput, claim, meta_path, recorded

    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\n')
    with open(meta_path(out), "w") as f:
        f.write(text)
    assert recorded(out) == {}
    fp = Fingerprint.of({"k": 1})
    with pytest.raises(StaleOutput, match=r"its record .*out.jsonl.meta.json is unreadable.*--overwrite"):
        claim(out, fp)
    claim(out, fp, replace=True)  # --overwrite makes it again


def test_config_with_more_layers_than_tensors_names_tensor_and_file(tmp_path, capsys):
    from jaxcot.models import ModelConfig, init_model, load_model, save_hf

    cfg = ModelConfig(family="llama", vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=8)
    folder = save_hf(init_model(cfg, 0), tmp_path / "model")
    with open(os.path.join(folder, "config.json")) as f:
        hf = json.load(f)
    hf["num_hidden_layers"] = 3
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf, f)
    with pytest.raises(KeyError, match=r"model\.layers\.2\."):  # still a KeyError for the code that catches one
        load_model(folder)
    one_line(["generate", f"--model={folder}", "--prompt", "hi"], capsys,
             r"model.safetensors: missing tensor 'model\.layers\.2\..*3 layers.*same model")


# -- checkpoints -----------------------------------------------------------------------------------


def _saved_checkpoints(directory, steps=(1, 2)):
    import grain
    import jax.numpy as jnp

    from jaxcot.train.checkpoint import Checkpointer

    ck = Checkpointer(directory, keep=5, async_save=False)
    it = iter(grain.MapDataset.range(10).to_iter_dataset())
    next(it)
    for s in steps:
        ck.save(s, params={"w": jnp.full((4, 4), float(s))}, opt_state={"m": jnp.zeros(4)},
                data_state=it.get_state(), meta={"step": s})
    ck.close()


def _restore_args(shape=(4, 4)):
    import grain
    import jax
    import jax.numpy as jnp

    sh = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return dict(params={"w": jnp.zeros(shape)}, opt_state={"m": jnp.zeros(4)}, shardings_params={"w": sh},
                shardings_opt={"m": sh}, iterator=iter(grain.MapDataset.range(10).to_iter_dataset()))


def _truncate_arrays(step_dir):
    for root, _, files in os.walk(os.path.join(step_dir, "params")):
        if os.path.basename(root) == "d":
            for name in files:
                p = os.path.join(root, name)
                blob = open(p, "rb").read()
                open(p, "wb").write(blob[: len(blob) // 2])


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_checkpoint_falls_back_to_the_newest_intact_step(tmp_path, damage):
    from jaxcot.train.checkpoint import Checkpointer, latest_meta

    d = str(tmp_path / "checkpoints")
    _saved_checkpoints(d)
    if damage == "truncated":
        _truncate_arrays(os.path.join(d, "2"))
    else:
        os.remove(os.path.join(d, "2", "meta", "metadata"))
        assert latest_meta(d) == {"step": 1}
    said = []
    ck = Checkpointer(d, keep=5, async_save=False)
    params, _, meta = ck.restore_latest(say=said.append, **_restore_args())
    assert meta == {"step": 1} and float(params["w"][0, 0]) == 1.0
    assert len(said) == 1 and re.search(r"checkpoints: step 2 cannot be read .*moved it to .*broken/2, trying the "
                                        r"step before it", said[0]), said
    assert ck.all_steps() == [1] and os.path.isdir(d + ".broken/2")
    ck.close()
    _saved_checkpoints(d, steps=(2,))  # the step is saved again, not skipped as existing
    ck = Checkpointer(d, keep=5, async_save=False)
    assert ck.restore_latest(say=said.append, **_restore_args())[2] == {"step": 2}
    ck.close()


def test_no_readable_checkpoint_is_one_line(tmp_path):
    from jaxcot.train.checkpoint import Checkpointer

    d = str(tmp_path / "checkpoints")
    _saved_checkpoints(d, steps=(1,))
    _truncate_arrays(os.path.join(d, "1"))
    ck = Checkpointer(d, keep=5, async_save=False)
    with pytest.raises(ValueError, match=r"checkpoints: no checkpoint can be read .*checkpoint.resume=false") as e:
        ck.restore_latest(say=lambda s: None, **_restore_args())
    assert "\n" not in str(e.value)
    ck.close()


def test_checkpoint_of_another_model_size_is_one_line(tmp_path):
    from jaxcot.train.checkpoint import Checkpointer, CheckpointMismatch

    d = str(tmp_path / "checkpoints")
    _saved_checkpoints(d)
    ck = Checkpointer(d, keep=5, async_save=False)
    with pytest.raises(CheckpointMismatch, match=r"checkpoints: step 2 was saved from another model \(w: \(4, 4\) in "
                                                  r"the checkpoint, \(8, 4\) in this model\); use a new output_dir"
                       ) as e:
        ck.restore_latest(say=lambda s: pytest.fail(s), **_restore_args((8, 4)))
    assert "\n" not in str(e.value) and isinstance(e.value, ValueError)  # the CLI's one-line errors
    assert ck.all_steps() == [1, 2]  # nothing moved aside: the checkpoint is intact
    ck.close()


# -- the machine -----------------------------------------------------------------------------------


def test_read_only_compilation_cache_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog, capsys):
    from jaxcot import runtime

    real = os.makedirs

    def read_only(path, *a, **k):
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(runtime.os, "makedirs", read_only)
    with caplog.at_level(logging.WARNING, logger="jaxcot"):
        assert runtime.enable_compilation_cache(str(tmp_path / "ro" / "xla")) is None
    assert "cannot be written (Permission denied); going on without it" in caplog.text

    (tmp_path / "file").write_text("")  # a cache folder that cannot be made, whoever runs the test
    monkeypatch.setenv("JAXCOT_CACHE_DIR", str(tmp_path / "file"))
    code, err = run_cli(["testbed", "data", "--n", "2", "--out", tmp_path / "t.jsonl"], capsys)
    assert code == 0 and (tmp_path / "t.jsonl").exists()


def test_disk_full_is_one_line_and_keeps_the_previous_output(tmp_path, monkeypatch, capsys):
    out = tmp_path / "t.jsonl"
    assert run_cli(["testbed", "data", "--n", "2", "--out", out], capsys)[0] == 0
    before = out.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("jaxcot.io.os.fsync", full)
    line = one_line(["testbed", "data", "--n", "3", "--out", out], capsys,
                    r"cannot write .*t.jsonl: No space left on device; free some space")
    assert "Traceback" not in line
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["t.jsonl"]
    monkeypatch.undo()


def test_disk_full_in_a_partial_file_names_it(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    with pytest.raises(OSError, match=r"out.jsonl.partial") as e:
        with ResumableJsonl(out, ids=["a"]) as w:
            def full():
                raise OSError(errno.ENOSPC, "No space left on device")

            w._f.flush = full
            w.write({"id": "a"})
    assert e.value.errno == errno.ENOSPC and e.value.filename.endswith("out.jsonl.partial")
    shutil.rmtree(tmp_path, ignore_errors=True)
