"""Token choice, per-token statistics, stop-string matching and the chain/answer split."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcot.generate.sampling import SamplingConfig, argmax, filter_logits, row_keys, sample, step_keys, token_stats
from jaxcot.generate.stop import StopPatterns, first_stop, match_suffix, trim_at_stop
from jaxcot.text.prompts import PromptConfig

N = 4000  # draws per statistical test: 4 sigma of a binomial frequency is <= 0.032


def draws(logits, cfg, n=N, seed=0):
    """n samples of one row of logits [V] -> [n] ids (each draw its own row key)."""
    keys = row_keys(seed, np.arange(n))
    batch = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, len(logits)))
    return np.asarray(jax.jit(lambda b, k: sample(b, k, cfg))(batch, keys))


def assert_frequencies(ids, probs):
    """Empirical frequencies within 4 binomial sigmas of `probs` [V]."""
    freq = np.bincount(ids, minlength=len(probs)) / len(ids)
    sigma = np.sqrt(np.maximum(probs * (1 - probs), 1e-12) / len(ids))
    assert np.all(np.abs(freq - probs) <= 4 * sigma + 1e-9), (freq, probs)


def test_temperature_zero_is_argmax():
    logits = jax.random.normal(jax.random.key(0), (16, 101)) * 3
    got = sample(logits, row_keys(0, np.arange(16)), SamplingConfig(temperature=0.0))
    np.testing.assert_array_equal(np.asarray(got), np.argmax(np.asarray(logits), -1))


def test_temperature_one_follows_softmax():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    assert_frequencies(draws(logits, SamplingConfig(temperature=1.0)), np.array([0.4, 0.3, 0.2, 0.1]))


def test_top_k_never_leaves_the_top_k_and_renormalises():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=50) * 1.5
    k = 5
    ids = draws(logits, SamplingConfig(temperature=1.0, top_k=k))
    top = np.argsort(-logits)[:k]
    assert set(np.unique(ids)) <= set(top.tolist())
    p = np.zeros(50)
    p[top] = np.exp(logits[top] - logits[top].max())
    assert_frequencies(ids, p / p.sum())


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])  # sorted: 0.5, 0.2, 0.15 | 0.1, 0.05
    ids = draws(np.log(probs), SamplingConfig(temperature=1.0, top_p=0.8))
    assert set(np.unique(ids)) <= {1, 3, 4}
    kept = np.where(np.isin(np.arange(5), [1, 3, 4]), probs, 0.0)
    assert_frequencies(ids, kept / kept.sum())
    # mass exactly reached by the first token: only it remains
    ids = draws(np.log(probs), SamplingConfig(temperature=1.0, top_p=0.5), n=200)
    assert set(np.unique(ids)) == {1}


def test_top_k_and_top_p_together():
    probs = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    cand, ids = filter_logits(jnp.log(jnp.asarray(probs))[None], SamplingConfig(temperature=1.0, top_k=3, top_p=0.6))
    kept = np.asarray(ids)[0][np.isfinite(np.asarray(cand)[0])]
    # top-3 renormalised: 0.4, 0.333, 0.267 -> mass before the third is 0.733 >= 0.6
    assert kept.tolist() == [0, 1]


def test_seeded_sampling_is_reproducible():
    logits = jax.random.normal(jax.random.key(3), (8, 64))
    cfg = SamplingConfig(temperature=1.3, top_k=20, top_p=0.9)
    a = sample(logits, step_keys(row_keys(7, np.arange(8)), jnp.int32(2)), cfg)
    b = sample(logits, step_keys(row_keys(7, np.arange(8)), jnp.int32(2)), cfg)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    many = [np.asarray(sample(logits, step_keys(row_keys(s, np.arange(8)), jnp.int32(2)), cfg)) for s in range(8)]
    assert len({m.tobytes() for m in many}) > 1  # other seeds give other draws


def test_bad_sampling_settings_are_errors():
    for kw in (dict(temperature=-1.0), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingConfig(**kw)


def test_token_stats_logprob_and_entropy():
    v = 37
    logits = jnp.zeros((1, v))
    logp, ent = token_stats(logits, jnp.array([4]))
    assert abs(float(ent[0]) - np.log(v)) < 1e-5 and abs(float(logp[0]) + np.log(v)) < 1e-5
    probs = np.array([0.7, 0.2, 0.1])
    logp, ent = token_stats(jnp.log(jnp.asarray(probs))[None] + 3.0, jnp.array([1]))
    assert abs(float(ent[0]) + np.sum(probs * np.log(probs))) < 1e-5
    assert abs(float(logp[0]) - np.log(0.2)) < 1e-5


def test_argmax_is_numpys_on_ties_nan_and_inf():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 300)).astype(np.float32)
    x[1, [40, 7, 90]] = 9.0  # ties: the first
    x[2, [50, 12]] = np.nan  # NaN wins, the first one
    x[3] = -np.inf
    x[3, 5] = 0.0
    x[4] = -np.inf  # all -inf: index 0
    np.testing.assert_array_equal(argmax(jnp.asarray(x)), np.argmax(x, axis=-1))


def test_token_stats_of_masked_logits_are_finite():
    # -inf logits (masked tokens) have probability 0 and add nothing to the entropy
    logits = jnp.asarray([[0.0, 0.0, -jnp.inf, -jnp.inf]])
    logp, ent = token_stats(logits, jnp.array([1]))
    np.testing.assert_allclose(logp, [np.log(0.5)], rtol=1e-6)
    np.testing.assert_allclose(ent, [np.log(2.0)], rtol=1e-6)


def test_match_suffix():
    pats = StopPatterns(rows=((5, 6), (9,)), width=2)
    window = jnp.array([[-1, 9], [5, 6], [6, 5], [-1, -1], [4, 6]])
    assert np.asarray(match_suffix(window, pats.table)).tolist() == [True, True, False, False, False]
    assert not np.asarray(match_suffix(window, StopPatterns().table)).any()


def test_trim_at_stop_finds_the_completing_token():
    pieces = ["Step", " one", ".\n\n", "Quest", "ion", ":", " more"]
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    n, text = trim_at_stop(range(len(pieces)), decode, ["\n\nQuestion:"])
    assert n == 6 and text == "Step one."
    assert trim_at_stop(range(len(pieces)), decode, ["zzz"]) is None
    assert first_stop("a STOP b END", ["END", "STOP"]) == (2, 6)


def test_prompt_config_needs_question_field():
    with pytest.raises(ValueError, match="question"):
        PromptConfig(template="no field")
