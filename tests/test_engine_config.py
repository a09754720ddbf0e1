"""The decode engine's settings (`EngineConfig`) as the stages take them: parsed from YAML and
key=value overrides in the generate, eval, GRPO and run configs, the `jaxcot generate` flags, and
the generate and eval stages running through the continuous engine on the tiny model."""

import json

import pytest
import yaml

from jaxcot.config import ConfigError, from_dict, load_config
from jaxcot.eval.students import EvalConfig, Student, evaluate_model
from jaxcot.generate.config import EngineConfig, EvictionConfig
from jaxcot.generate.traces import GenerateConfig, load_generator, trace_record, write_traces
from jaxcot.provenance import meta_path
from jaxcot.rl.config import GRPOConfig


def test_engine_sections_parse_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"max_new_tokens": 64, "engine": {
        "continuous": True, "slots": 4, "eviction": {"budget": 32, "window": 4, "scorer": "recency"}}}))
    cfg = load_config(GenerateConfig, str(path), ["engine.early_exit.enabled=true", "engine.early_exit.threshold=0.9",
                                                  'engine.early_exit.boundary=["\\n", "."]'])
    e = cfg.engine
    assert isinstance(e, EngineConfig) and e.continuous and e.slots == 4 and e.queue == 256
    assert e.eviction == EvictionConfig(budget=32, window=4, scorer="recency")
    assert e.early_exit.enabled and e.early_exit.threshold == 0.9 and e.early_exit.boundary == ["\n", "."]
    assert GenerateConfig().engine == EngineConfig()  # the static loop by default

    ev = load_config(EvalConfig, None, ["engine.continuous=true", "engine.slots=8"])
    assert ev.engine == EngineConfig(continuous=True, slots=8) and EvalConfig().engine == EngineConfig()
    g = load_config(GRPOConfig, None, ["init_from=x", "engine={continuous: true, slots: 2}"])
    assert g.engine == EngineConfig(continuous=True, slots=2)
    assert GRPOConfig(init_from="x").engine is None  # the static loop; runs recorded without the field still match
    with pytest.raises(ConfigError, match="continuous loop") as e:
        load_config(GRPOConfig, None, ["init_from=x", "engine.early_exit.enabled=true"])
    assert e.value.key == "engine.continuous"


def test_the_run_config_takes_the_engine_sections():
    from jaxcot.run import RunConfig

    cfg = load_config(RunConfig, None, ["generate.engine.continuous=true", "generate.engine.slots=4",
                                        "eval.engine.continuous=true", "eval.engine.eviction.budget=64",
                                        "rl.grpo={engine: {continuous: true}}"])
    assert cfg.generate.engine == EngineConfig(continuous=True, slots=4)
    assert cfg.eval.engine.continuous and cfg.eval.engine.eviction.budget == 64
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, None, ["generate.engine.early_exit.enabled=true"])
    assert e.value.key == "generate.engine.continuous" and "engine.continuous=true" in str(e.value)


@pytest.mark.parametrize("cls, overrides, key, match", [
    (GenerateConfig, ["engine.early_exit.enabled=true"], "engine.continuous", "continuous loop"),
    (GenerateConfig, ["engine.eviction.budget=32"], "engine.continuous", "continuous loop"),
    (EvalConfig, ["engine.eviction.budget=32"], "engine.continuous", "continuous loop"),
    (GenerateConfig, ["engine.continuous=true", "engine.eviction.budget=8", "engine.eviction.window=8"],
     "engine.eviction.window", "below the eviction budget"),
    (GenerateConfig, ["engine.continuous=true", "engine.slots=0"], "engine.slots", ">= 1"),
    (GenerateConfig, ["engine.continuous=true", "engine.early_exit.criterion=vibes"], "engine.early_exit.criterion",
     "must be one of"),
    (GenerateConfig, ["engine.continous=true"], "engine.continous", "did you mean 'continuous'"),
    (GenerateConfig, ["engine.slots=many"], "engine.slots", "expected int"),
])
def test_bad_engine_settings_name_their_key(cls, overrides, key, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(cls, None, overrides)
    assert e.value.key == key
    # a cross-field rule names the key to change, which the command line may not have given
    assert ("on the command line" in str(e.value)) == any(o.startswith(key + "=") for o in overrides)


def test_generate_flags_set_the_engine(capsys):
    from jaxcot.cli import main

    assert main(["generate", "--print-config", "--continuous", "--slots", "4", "--early-exit",
                 "--evict-budget", "32", "engine.early_exit.threshold=0.9"]) == 0
    e = from_dict(GenerateConfig, yaml.safe_load(capsys.readouterr().out)).engine
    assert e.continuous and e.slots == 4 and e.early_exit.enabled and e.early_exit.threshold == 0.9
    assert e.eviction.budget == 32
    assert main(["generate", "--print-config", "--early-exit"]) == 2
    assert "engine.continuous" in capsys.readouterr().err


def test_trace_records_carry_the_engine_fields_only_when_reported():
    from jaxcot.generate.api import Completion

    item = {"id": "a", "question": "q"}
    c = Completion("so 4. The answer is 4.", [5, 6, 7], [0.0] * 3, [0.0] * 3, "eos", [1])
    static = trace_record(item, c, GenerateConfig())
    assert "cache_peak" not in static and "early_exit_at" not in static
    rec = trace_record(item, Completion(**{**c.__dict__, "finish_reason": "early", "cache_peak": 12, "exit_at": 1}),
                       GenerateConfig())
    assert rec == dict(static, finish_reason="early", cache_peak=12, early_exit_at=1)


@pytest.fixture(scope="module")
def questions():
    from jaxcot.testbed.problems import generate

    return [{"id": it["id"], "question": it["question"], "gold": it["gold"]} for it in generate(5, 3)]


def test_generate_stage_through_the_continuous_engine_writes_the_static_traces(tiny_model_folder, questions,
                                                                               tmp_path):
    """Greedy: the continuous loop writes what the static one does, plus each row's cache peak; the
    engine is part of the output's fingerprint only when it is not the default."""
    folder = tiny_model_folder
    static_cfg = GenerateConfig(max_new_tokens=12, batch_size=2)
    cont_cfg = load_config(GenerateConfig, None, ["max_new_tokens=12", "batch_size=2", "engine.continuous=true",
                                                  "engine.slots=2"])
    gen = load_generator(folder, cont_cfg)
    assert gen.engine == cont_cfg.engine  # load_generator hands the engine on
    static = write_traces(questions, str(tmp_path / "static.jsonl"), static_cfg, load_generator(folder, static_cfg),
                          progress=False)
    cont = write_traces(questions, str(tmp_path / "cont.jsonl"), cont_cfg, gen, progress=False)
    assert all(isinstance(r["cache_peak"], int) and r["cache_peak"] > r["num_tokens"] for r in cont)
    assert not any("early_exit_at" in r or "cache_peak" in r for r in static)
    assert [{k: v for k, v in r.items() if k != "cache_peak"} for r in cont] == static

    recorded = lambda name: json.loads(open(meta_path(tmp_path / name)).read())["settings"]["generate"]  # noqa: E731
    assert "engine" not in recorded("static.jsonl")
    assert recorded("cont.jsonl")["engine"]["continuous"] is True


def test_an_unknown_eviction_scorer_is_refused_when_the_engine_builds(tiny_model_folder):
    cfg = load_config(GenerateConfig, None, ["max_new_tokens=4", "engine.continuous=true",
                                             "engine.eviction={budget: 3, window: 1, scorer: nope}"])
    gen = load_generator(tiny_model_folder, cfg)
    with pytest.raises(ValueError, match="unknown eviction scorer 'nope'"):
        gen.generate_ids([[5, 6, 7]], max_new_tokens=4)


def test_eval_with_the_engine_reports_cache_peak(tiny_model_folder, questions, tmp_path):
    cfg = load_config(EvalConfig, None, ["max_new_tokens=8", "batch_size=2", "latency_samples=1",
                                         "engine.continuous=true", "engine.slots=2"])
    student = Student("tiny", tiny_model_folder)
    res = evaluate_model(student, questions[:3], cfg, str(tmp_path / "tiny.json"), say=lambda m: None,
                         progress=False)
    assert res["n"] == 3 and res["latency_s"] > 0 and res["mean_cache_peak"] > 0 and res["early_exit_share"] == 0.0
    assert json.loads((tmp_path / "tiny.json").read_text()) == res
    meta = json.loads(open(meta_path(tmp_path / "tiny.json")).read())["settings"]
    assert meta["eval.engine"]["continuous"] is True and meta["eval"]["engine"]["slots"] == 2

    static = evaluate_model(student, questions[:3], EvalConfig(max_new_tokens=8, batch_size=2, latency_samples=1),
                            str(tmp_path / "static.json"), latency=False, say=lambda m: None, progress=False)
    assert "mean_cache_peak" not in static and "early_exit_share" not in static
    assert static["accuracy"] == res["accuracy"] and static["mean_new_tokens"] == res["mean_new_tokens"]
    meta = json.loads(open(meta_path(tmp_path / "static.json")).read())["settings"]
    assert "eval.engine" not in meta


def test_grpo_rollouts_decode_with_the_engine(tmp_path, monkeypatch):
    """The rollout's Generator gets `GRPOConfig.engine` (stopped there: the engine's sampling is
    the generate stage's, tested above and in the engine's own tests)."""
    import jaxcot.rl.loop as loop
    from jaxcot.rl import grpo
    from jaxcot.testbed.problems import generate
    from jaxcot.testbed.teacher import teacher_path

    class Asked(Exception):
        pass

    def generator(*a, engine=None, **k):
        raise Asked(engine)

    monkeypatch.setattr(loop, "Generator", generator)
    cfg = from_dict(GRPOConfig, {
        "init_from": teacher_path(), "output_dir": str(tmp_path / "g"), "max_steps": 1, "prompts_per_step": 1,
        "num_generations": 2, "max_new_tokens": 8, "progress": False, "log": {"tensorboard": False},
        "checkpoint": {"enabled": False}, "mesh": {"devices": 1},
        "engine": {"continuous": True, "slots": 2}})
    qs = [{"id": r["id"], "question": r["question"], "gold": r["gold"]} for r in generate(2, 5)]
    with pytest.raises(Asked) as e:
        grpo(cfg, questions=qs, handle_sigterm=False)
    assert e.value.args[0] == EngineConfig(continuous=True, slots=2)


def test_a_config_file_extends_another(tmp_path):
    from jaxcot.config import ConfigError, load_config
    from jaxcot.generate.config import GenerateConfig

    (tmp_path / "base.yaml").write_text("max_new_tokens: 64\nengine: {continuous: true, slots: 4}\nstop: ['a', 'b']\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nengine: {slots: 8}\nstop: ['c']\n")
    cfg = load_config(GenerateConfig, tmp_path / "child.yaml")
    assert (cfg.max_new_tokens, cfg.engine.continuous, cfg.engine.slots, cfg.stop) == (64, True, 8, ["c"])
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(GenerateConfig, tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: no such config file"):
        load_config(GenerateConfig, tmp_path / "gone.yaml")
