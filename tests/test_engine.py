"""The continuous engine (jaxcot/generate/engine.py): the static loop's outputs prompt by prompt,
streams that do not depend on the slots, eviction within its budget, early exits that commit or
leave no trace."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxcot.generate import Generator
from jaxcot.generate.config import EarlyExitConfig, EngineConfig, EvictionConfig
from jaxcot.generate.engine import EngineSpec, EvictionSpec, SlotEngine, cache_tiers, engine_spec
from jaxcot.generate.sampler import EARLY, DecodeSpec, Sampler
from jaxcot.generate.sampling import SamplingConfig
from jaxcot.generate.stop import StopPatterns
from jaxcot.models import ModelConfig, init_model, load_model, load_tokenizer
from jaxcot.sharding import make_mesh
from jaxcot.testbed.problems import generate
from jaxcot.testbed.teacher import learned_task, teacher_path
from jaxcot.text.prompts import PromptConfig, prompt_ids


@pytest.fixture(scope="module")
def teacher():
    path = teacher_path()
    model, tok = load_model(path), load_tokenizer(path)
    recs = list(generate(20, seed=3, cfg=learned_task(path), offset=10_000_000))
    ids = [prompt_ids(tok, r["question"], PromptConfig(template="{question}")) for r in recs]
    return Generator(model, tok), tok, ids


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig(family="llama", vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8)
    gen = Generator(init_model(cfg, 1), eos_ids=(), fuse_weights=False)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 48, n).tolist() for n in (3, 9, 5, 14, 2, 7, 11, 4, 6, 8)]
    return gen, prompts


def _decode(gen: Generator, n: int, sampling=SamplingConfig()) -> DecodeSpec:
    return DecodeSpec(n, sampling, gen.eos_ids, StopPatterns(), gen.pad_id)


def _rows(out):
    return [out.tokens[i, :out.lengths[i]].tolist() for i in range(len(out.lengths))]


def test_continuous_greedy_equals_static_prompt_by_prompt(teacher):
    gen, _, ids = teacher
    static = gen.generate_ids(ids, max_new_tokens=200, batch_size=8)
    out = SlotEngine(gen.sampler).run(ids, EngineSpec(_decode(gen, 200), slots=4))
    assert _rows(out) == [c.token_ids for c in static]
    for i, c in enumerate(static):
        np.testing.assert_allclose(out.logprobs[i, :len(c.token_ids)], c.logprobs, atol=1e-4)
    # Refills happened: 20 prompts through 4 slots, in fewer decode steps than one batch each.
    assert out.steps < sum(len(c.token_ids) for c in static)
    assert np.all(out.peak == [len(p) + len(c.token_ids) - 1 for p, c in zip(ids, static)])


def test_sampled_streams_do_not_depend_on_slots(tiny):
    gen, prompts = tiny
    spec = _decode(gen, 20, SamplingConfig(temperature=1.0, top_k=20))
    runs = [_rows(SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=s), seed=5, row_seeds=range(10, 20)))
            for s in (2, 4, 8)]
    assert runs[0] == runs[1] == runs[2]
    static = gen.generate_ids(prompts, max_new_tokens=20, sampling=spec.sampling, seed=5, row_seeds=range(10, 20),
                              batch_size=4)
    assert runs[0] == [c.token_ids for c in static]
    other = _rows(SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=4), seed=6, row_seeds=range(10, 20)))
    assert other != runs[0]


def test_a_cache_grown_in_tiers_changes_nothing(tiny):
    gen, prompts = tiny
    spec = EngineSpec(_decode(gen, 100, SamplingConfig(temperature=1.0)), slots=4)
    tiered = Sampler(init_model(gen.sampler.config, 1), min_phase_room=8, fuse_weights=False)
    assert cache_tiers(spec, tiered.decode_phases, tiered.min_phase_room) == (32, 64, 100)
    one = SlotEngine(gen.sampler).run(prompts, spec, seed=2)
    four = SlotEngine(tiered).run(prompts, spec, seed=2)
    assert _rows(four) == _rows(one) and np.all(four.peak == one.peak)


def test_engine_on_a_mesh_of_eight_devices(tiny):
    gen, prompts = tiny
    mesh = make_mesh(devices=jax.devices()[:8])
    sharded = Generator(init_model(gen.sampler.config, 1), mesh=mesh, eos_ids=(),
                        fuse_weights=False)
    spec = _decode(gen, 12)
    one = _rows(SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=8)))
    eight = _rows(SlotEngine(sharded.sampler).run(prompts, EngineSpec(spec, slots=8)))
    assert one == eight


def test_eviction_holds_the_budget_and_changes_nothing_below_it(tiny):
    gen, prompts = tiny
    spec = _decode(gen, 30)
    plain = SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=4))
    roomy = SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=4, eviction=EvictionSpec(40, 4)))
    assert _rows(roomy) == _rows(plain) and np.all(roomy.peak == plain.peak)
    for scorer in ("attention", "redundancy", "recency"):
        tight = SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=4, eviction=EvictionSpec(6, 2, scorer)))
        assert np.all(tight.lengths == 30)
        assert np.all(tight.peak == np.array([len(p) for p in prompts]) + 7), scorer
        # Eviction starts once a row holds more than 6 chain tokens: the first 7 tokens are the same.
        assert [r[:8] for r in _rows(tight)] == [r[:8] for r in _rows(plain)]
    recency = SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=4, eviction=EvictionSpec(6, 2, "recency")))
    assert _rows(recency) != _rows(plain)  # a random model reads what was evicted
    # A fork's own scorer, by reference: the oldest first again, so recency's outputs.
    own = SlotEngine(gen.sampler).run(prompts, EngineSpec(spec, slots=4, eviction=EvictionSpec(
        6, 2, "test_engine:oldest_first")))
    assert _rows(own) == _rows(recency)


def oldest_first(running, step):
    """An eviction scorer defined outside jaxcot (reached as 'test_engine:oldest_first')."""
    return running, step.pos.astype(np.float32) * 2.0


def _early(gen, tok, **kw) -> EngineSpec:
    cfg = EngineConfig(continuous=True, slots=4, early_exit=EarlyExitConfig(enabled=True, **kw))
    return engine_spec(cfg, _decode(gen, 200), tok)


def test_rejected_trials_leave_the_chain_as_it_was(teacher):
    gen, tok, ids = teacher
    plain = SlotEngine(gen.sampler).run(ids, EngineSpec(_decode(gen, 200), slots=4))
    never = SlotEngine(gen.sampler).run(ids, _early(gen, tok, criterion="entropy", threshold=0.0))
    assert np.all(never.trials >= 2) and np.all(never.exit_at == -1)
    assert _rows(never) == _rows(plain)
    np.testing.assert_allclose(never.logprobs, plain.logprobs, atol=1e-5)  # another program: last-bit sums


def test_a_confident_trial_ends_the_chain_with_its_answer(teacher):
    gen, tok, ids = teacher
    plain = _rows(SlotEngine(gen.sampler).run(ids, EngineSpec(_decode(gen, 200), slots=4)))
    spec = _early(gen, tok, threshold=0.0)
    out = SlotEngine(gen.sampler).run(ids, spec)
    marker = list(spec.early_exit.marker)
    for i, row in enumerate(_rows(out)):
        at = int(out.exit_at[i])
        assert out.reason[i] == EARLY and out.trials[i] == 1
        assert row[:at] == plain[i][:at]  # the chain up to the first step boundary
        assert tok.decode(row[at - 2:at]) == tok.decode(tok.encode("\n\n", add_special_tokens=False))
        assert row[at:at + len(marker)] == marker
        assert len(row) - at - len(marker) in range(1, spec.early_exit.answer_tokens + 1)
    # agree=2: the first trial cannot end a chain alone.
    two = SlotEngine(gen.sampler).run(ids, dataclasses.replace(spec, early_exit=dataclasses.replace(
        spec.early_exit, agree=2)))
    assert np.all((two.trials >= 2) | (two.exit_at == -1))
    # min_tokens: no trial before that many chain tokens, so every row passes its first boundary.
    m = int(out.exit_at.max()) + 1
    late = SlotEngine(gen.sampler).run(ids, dataclasses.replace(spec, early_exit=dataclasses.replace(
        spec.early_exit, min_tokens=m)))
    done = late.exit_at >= 0
    assert done.any() and np.all(late.exit_at[done] >= m - 1) and np.all(late.exit_at[done] > out.exit_at[done])
    assert all(row[:at] == p[:at] for row, p, at in zip(_rows(late), plain, late.exit_at) if at >= 0)


def test_a_cue_trial_takes_the_place_of_the_boundary_token(teacher):
    """`cue`: the trial replaces the token that completes the boundary (DEER's inducer in place of
    its "Wait"); rejected, that token is fed and the chain goes on as if no trial had run."""
    gen, tok, ids = teacher
    plain_out = SlotEngine(gen.sampler).run(ids, EngineSpec(_decode(gen, 200), slots=4))
    plain = _rows(plain_out)
    spec = _early(gen, tok, threshold=0.0, cue=True)
    out = SlotEngine(gen.sampler).run(ids, spec)
    marker = list(spec.early_exit.marker)
    newline = tok.encode("\n", add_special_tokens=False)
    for i, row in enumerate(_rows(out)):
        at = int(out.exit_at[i])
        assert out.reason[i] == EARLY and out.trials[i] == 1
        assert row[:at] == plain[i][:at] and row[at - 1:at] == newline  # the blank line's first newline
        assert plain[i][at:at + 1] == newline and row[at:at + len(marker)] == marker  # its second, replaced
    after = SlotEngine(gen.sampler).run(ids, _early(gen, tok, threshold=0.0))
    assert np.all(out.exit_at == after.exit_at - 1)  # one token sooner than a trial after the boundary
    never = SlotEngine(gen.sampler).run(ids, _early(gen, tok, criterion="entropy", threshold=0.0, cue=True))
    assert np.all(never.trials >= 2) and np.all(never.exit_at == -1) and _rows(never) == plain
    np.testing.assert_allclose(never.logprobs, plain_out.logprobs, atol=1e-5)


def test_complete_commits_only_answers_that_ended(teacher):
    """`complete`: at threshold 0 every trial would commit; with it, only those whose answer reached
    its end. The teacher's first trials answer one number token and '.': two answer tokens end them
    all, one cuts them all."""
    gen, tok, ids = teacher
    runs = {}
    for width in (1, 2):
        spec = _early(gen, tok, threshold=0.0, answer_tokens=width)
        strict = dataclasses.replace(spec, early_exit=dataclasses.replace(spec.early_exit, complete=True))
        runs[width] = [SlotEngine(gen.sampler).run(ids, s) for s in (spec, strict)]
    ends = set(spec.early_exit.answer_end)
    loose, strict = runs[2]
    assert np.all(strict.exit_at == loose.exit_at) and all(row[-1] in ends for row in _rows(strict))
    loose, strict = runs[1]
    assert np.all(loose.exit_at >= 0) and not any(row[-1] in ends for row in _rows(loose))
    assert np.all(strict.exit_at == -1) and np.all(strict.trials >= 2)


def test_generator_runs_the_engine_and_reports_it(teacher, monkeypatch):
    gen, tok, ids = teacher
    engine = EngineConfig(continuous=True, slots=4, eviction=EvictionConfig(budget=64, window=16))
    fast = Generator(load_model(teacher_path()), tok, engine=engine)
    outs = fast.generate_ids(ids[:6], max_new_tokens=120)
    assert all(c.cache_peak <= len(p) + 65 for c, p in zip(outs, ids)) and all(c.exit_at is None for c in outs)
    slots = []  # a call never decodes more rows than it has prompts (batch-1 latency runs one row)
    run = SlotEngine.run
    monkeypatch.setattr(SlotEngine, "run",
                        lambda self, p, spec, **kw: slots.append(spec.slots) or run(self, p, spec, **kw))
    one = fast.generate_ids(ids[:1], max_new_tokens=120)
    assert slots == [1] and one[0].token_ids == outs[0].token_ids
    with pytest.raises(ValueError, match="continuous"):
        EngineConfig(early_exit=EarlyExitConfig(enabled=True))
    with pytest.raises(ValueError, match="window"):
        EvictionConfig(budget=8, window=8)
    with pytest.raises(ValueError, match="eviction scorer"):
        EvictionSpec(8, 2, "nope")
