"""A GRPO run on the shipped testbed teacher: it learns (the parameters move, rewards vary within
groups), a reward it can move rises within three steps (so the advantages' sign is right), the
first iteration's ratio is exactly 1, a run stopped mid-way and resumed ends with exactly the
parameters of an uninterrupted one, and two processes on loopback give one process's rewards
exactly and its parameters to float32 rounding."""

import json
import os
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
from processes import free_port, run_all

from jaxcot.config import from_dict, to_dict
from jaxcot.programs import ProgramCache
from jaxcot.rl import GRPOConfig, grpo
from jaxcot.testbed.problems import TestbedConfig, generate
from jaxcot.testbed.teacher import teacher_path

CACHE = ProgramCache()  # compiled programs shared by this module's runs
QUESTIONS = [{"id": r["id"], "question": r["question"], "gold": r["gold"]}
             for r in generate(6, 5, TestbedConfig(max_value=50))]


def config(out, **over):
    base = dict(
        init_from=teacher_path(), output_dir=str(out), max_steps=3, prompts_per_step=2, num_generations=4,
        num_iterations=2, grad_accum=2, beta=0.04, sampling={"temperature": 1.0}, max_new_tokens=160,
        lora={"rank": 4, "alpha": 8.0, "dropout": 0.05}, optim={"lr": 2e-3, "warmup_ratio": 0.0},
        rewards=[{"name": "correct", "weight": 2.0}, {"name": "length", "weight": -1.0, "args": {"limit": 110}}],
        checkpoint={"every": 1, "async_save": False}, log={"tensorboard": False}, progress=False,
        data={"prompt": {"template": "{question}"}}, mesh={"devices": 4},
    )
    return from_dict(GRPOConfig, {**base, **over})


def leaves(model):
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam).to_pure_dict())]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "full"
    return grpo(config(out), questions=QUESTIONS, handle_sigterm=False, cache=CACHE)


def test_run_learns_and_first_ratio_is_one(uninterrupted):
    res = uninterrupted
    assert res.status == "finished" and res.step == 3 and len(res.history) == 3
    for rec in res.history:
        assert rec["ratio_first_iteration"] == 1.0
        assert np.isfinite(rec["loss"]) and rec["kl"] >= 0.0
        assert 0 < rec["completion_tokens"] <= 160
    assert any(rec["reward_std"] > 0 for rec in res.history)  # something to learn from
    from flax import nnx

    lora_b = [np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(res.model, nnx.LoRAParam))
              if path[-1] == "lora_b"]
    assert lora_b and any(np.abs(x).max() > 0 for x in lora_b)  # B starts at zero: GRPO moved it
    assert res.history[-1]["kl"] > 0.0  # the policy left the reference
    assert os.path.isfile(os.path.join(res.export_dir, "model.safetensors"))
    lines = [json.loads(x) for x in open(os.path.join(res.output_dir, "metrics.jsonl"))]
    assert [r["step"] for r in lines] == [1, 2, 3]


def test_stopped_and_resumed_equals_uninterrupted(uninterrupted, tmp_path):
    first = grpo(config(tmp_path / "r"), questions=QUESTIONS, stop_after=1, handle_sigterm=False,
                 cache=CACHE)
    assert first.status == "stopped" and first.step == 1
    second = grpo(config(tmp_path / "r"), questions=QUESTIONS, handle_sigterm=False, cache=CACHE)
    assert second.status == "finished" and [r["step"] for r in second.history] == [2, 3]
    assert [r["reward"] for r in second.history] == [r["reward"] for r in uninterrupted.history[1:]]
    for a, b in zip(leaves(second.model), leaves(uninterrupted.model)):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(x) for x in open(tmp_path / "r" / "metrics.jsonl")]
    assert [r["step"] for r in lines] == [1, 2, 3]


def test_full_fine_tuning_with_a_reference_and_iterations(tmp_path):
    """method full has no dropout layer: the reference and old-policy passes run all the same."""
    res = grpo(config(tmp_path / "full", method="full", max_steps=1, optim={"lr": 1e-4}), questions=QUESTIONS,
               handle_sigterm=False, cache=CACHE)
    (rec,) = res.history
    assert res.status == "finished" and rec["ratio_first_iteration"] == 1.0 and rec["kl"] >= 0.0


def test_resume_with_other_settings_is_refused(uninterrupted, tmp_path):
    grpo(config(tmp_path / "r", max_steps=1), questions=QUESTIONS, handle_sigterm=False, cache=CACHE)
    with pytest.raises(ValueError, match="differs in beta"):
        grpo(config(tmp_path / "r", max_steps=1, beta=0.1), questions=QUESTIONS, handle_sigterm=False, cache=CACHE)


def test_config_checks():
    from jaxcot.config import ConfigError

    with pytest.raises(ConfigError, match="num_generations"):
        config("x", num_generations=1)
    with pytest.raises(ConfigError, match="grad_accum"):
        config("x", grad_accum=3)
    with pytest.raises(ConfigError, match="rewards"):
        config("x", rewards=[{"name": "nonsense"}])


def test_micro_batch_must_split_over_the_mesh(tmp_path):
    with pytest.raises(ValueError, match="multiple of data x fsdp = 8"):
        grpo(config(tmp_path, mesh={"devices": 0}), questions=QUESTIONS, handle_sigterm=False, cache=CACHE)


def test_configs_load_through_the_command(capsys):
    from jaxcot.cli import main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("grpo-tiny.yaml", "grpo-qwen2.5-step-entropy.yaml"):
        assert main(["rl", "--config", os.path.join(root, "configs", name), "--print-config", "max_steps=7"]) == 0
        shown = capsys.readouterr().out
        assert "max_steps: 7" in shown and "num_generations: 8" in shown and "skip_share" in shown


REWARD_KEYS = ("reward", "reward_std", "reward/correct", "reward/length", "completion_tokens", "clipped_at_length",
               "completion_tokens_total", "row_tokens")


def test_two_processes_equal_one(tmp_path):
    """Two processes of one device each against one process of one device, the sampler's batches
    of 2 completions split between them (every group of 4 spans both): the same completions and
    rewards exactly; the updates (one SPMD program over both devices) to float32 rounding."""
    over = dict(max_steps=2, rollout_batch_size=2, num_iterations=1, checkpoint={"every": 1, "async_save": False})
    one = grpo(config(tmp_path / "one", mesh={"devices": 1}, **over), questions=QUESTIONS, handle_sigterm=False,
               cache=CACHE)
    cfg = config(tmp_path / "two", mesh={"devices": 0}, **over)
    (tmp_path / "two.json").write_text(json.dumps(to_dict(cfg)))
    (tmp_path / "questions.json").write_text(json.dumps(QUESTIONS))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    port = free_port()
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpo_worker.py")
    outs = run_all([[sys.executable, worker, str(tmp_path / "two.json"), str(tmp_path / "questions.json"), str(i), "2",
                     str(port)] for i in range(2)], env=env, timeout=300)
    results = [json.loads(out.split("RESULT ")[-1]) for out in outs]
    assert [(r["status"], r["step"]) for r in results] == [("finished", 2)] * 2
    assert [r["sampled"] for r in results] == [8, 8]  # each process sampled half of 2 steps x 8 completions
    two = [json.loads(x) for x in open(tmp_path / "two" / "metrics.jsonl")]
    assert [r["step"] for r in two] == [1, 2] and any(r["reward_std"] > 0 for r in two)
    for a, b in zip(one.history, two):
        assert {k: b[k] for k in REWARD_KEYS} == {k: a[k] for k in REWARD_KEYS}
        np.testing.assert_allclose([b["loss"], b["kl"]], [a["loss"], a["kl"]], rtol=1e-4, atol=1e-6)
    want = safetensors.numpy.load_file(os.path.join(one.export_dir, "model.safetensors"))
    got = safetensors.numpy.load_file(tmp_path / "two" / "export" / "model.safetensors")
    assert got.keys() == want.keys()
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-5
    assert len(os.listdir(tmp_path / "two" / "checkpoints")) > 0


def opens_with_let(prompts, completions, records) -> list[float]:
    """1.0 where the completion's first word is 'Let' (the teacher opens with 'Let', 'Okay' or
    'Alright', 'Let' about a quarter of the time): a reward a few GRPO steps can move."""
    return [float(c.startswith("Let")) for c in completions]


def first_token_probability(model, tokenizer, token: int) -> float:
    """The mean probability over QUESTIONS that `model` opens its answer with `token`: the policy's
    expected `opens_with_let` reward, computed exactly (no sampling)."""
    import jax.numpy as jnp

    from jaxcot.text.prompts import PromptConfig, prompt_ids

    rows = [prompt_ids(tokenizer, q["question"], PromptConfig(template="{question}")) for q in QUESTIONS]
    width = max(len(r) for r in rows)
    ids = jnp.asarray([r + [0] * (width - len(r)) for r in rows])  # right-padded: each row's last real slot
    mask = jnp.asarray([[i < len(r) for i in range(width)] for r in rows])
    logits = model.forward(ids, jnp.broadcast_to(jnp.arange(width), ids.shape), mask).logits
    last = logits[jnp.arange(len(rows)), jnp.asarray([len(r) - 1 for r in rows])].astype(jnp.float32)
    return float(jax.nn.softmax(last, axis=-1)[:, token].mean())


def test_grpo_raises_a_reward_it_can_move(tmp_path):
    """GRPO maximises reward: rewarding the opening word 'Let' raises both the rollouts' reward and
    the policy's exact probability of opening with it within three steps (a sign error in the
    advantages drives both to zero instead). Adam's eps = 1 makes its first steps gradient-sized
    (plain Adam moves every LoRA entry by lr whatever its gradient, which at a useful lr swamps
    the policy gradient); beta 0, one iteration, two tokens per completion: only the sign of the
    advantages decides the direction."""
    from jaxcot.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(teacher_path())
    (let,) = tokenizer.encode("Let", add_special_tokens=False)
    before = first_token_probability(load_model(teacher_path()), tokenizer, let)
    cfg = config(tmp_path / "let", max_steps=3, num_generations=8, num_iterations=1, grad_accum=1, beta=0.0,
                 max_new_tokens=2, lora={"rank": 4, "alpha": 8.0, "dropout": 0.0}, export=False,
                 optim={"lr": 0.1, "eps": 1.0, "warmup_ratio": 0.0, "min_lr_ratio": 1.0},
                 rewards=[{"name": f"{__name__}:opens_with_let"}], mesh={"devices": 1},
                 checkpoint={"enabled": False})
    res = grpo(cfg, questions=QUESTIONS, handle_sigterm=False, cache=CACHE)
    rewards = [rec["reward"] for rec in res.history]
    after = first_token_probability(res.model, tokenizer, let)
    assert 0.1 < before < 0.4 and 0.0 < rewards[0] < 1.0, (before, rewards)  # room to rise, something to learn
    assert after > before + 0.25, (before, after, rewards)
    assert rewards[-1] > rewards[0] + 0.25 and rewards[-1] == max(rewards), rewards
