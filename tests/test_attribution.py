"""The scores beside GoGI (jaxcot.importance.attribution), each against an independent
computation from the public answer loss and forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcot.importance.attribution import (
    ablation_effect,
    answer_attention,
    chain_span,
    midpoints,
    path_attribution,
    self_information,
)
from jaxcot.importance.gogi import answer_loss, goal_gradients, predictive_stats
from jaxcot.models import ModelConfig, init_model

LENGTHS = (14, 11, 16)


@pytest.fixture(scope="module")
def case():
    cfg = ModelConfig(family="llama", vocab_size=40, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16)
    model = init_model(cfg, 0)
    rng = np.random.default_rng(0)
    b, t = len(LENGTHS), max(LENGTHS)
    tokens = rng.integers(1, 40, (b, t)).astype(np.int32)
    mask = np.arange(t)[None] < np.array(LENGTHS)[:, None]
    chain, answer = np.zeros((b, t), bool), np.zeros((b, t), bool)
    for i, n in enumerate(LENGTHS):
        chain[i, 3:n - 5] = True
        answer[i, n - 5:n - 2] = True
    return model, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(chain), jnp.asarray(answer)


def _hidden(model, tokens, mask, layer):
    return model.forward(tokens, mask=mask, return_hidden=True, with_logits=False).hidden[layer]


@pytest.mark.parametrize("layer", [0, 1])
def test_grad_x_act_is_the_goal_gradient_times_the_stream(case, layer):
    model, tokens, mask, chain, answer = case
    (g,), _ = goal_gradients(model, tokens, mask, answer, layers=[layer])
    want = np.abs(np.sum(np.asarray(g) * np.asarray(_hidden(model, tokens, mask, layer)), -1)) * np.asarray(chain)
    got = path_attribution(model, tokens, mask, chain, answer, layers=(layer,), alphas=(1.0,), max_answer=16)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_average_the_gradient_along_the_stream(case):
    model, tokens, mask, chain, answer = case
    h = _hidden(model, tokens, mask, 1)

    def grad_at(alpha):  # dL/d delta at delta = (alpha - 1) h, by jax.grad of the public loss
        return jax.grad(lambda d: answer_loss(model, tokens, mask, answer, perturb={1: d}).sum())((alpha - 1.0) * h)

    mean = sum(np.asarray(grad_at(a)) for a in midpoints(4)) / 4
    want = np.abs(np.sum(mean * np.asarray(h), -1)) * np.asarray(chain)
    got = path_attribution(model, tokens, mask, chain, answer, layers=(1,), alphas=midpoints(4), max_answer=16)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
    # completeness: summed over every slot, the signed attributions add up to L(h) - L(0 at layer 1)
    # (up to the midpoint rule's error at 64 steps)
    fine = midpoints(64)
    total = sum(np.asarray(grad_at(a)) for a in fine) / len(fine)
    drop = answer_loss(model, tokens, mask, answer) - answer_loss(model, tokens, mask, answer, perturb={1: -h})
    np.testing.assert_allclose(np.sum(total * np.asarray(h), axis=(1, 2)), np.asarray(drop), atol=1e-3)


def test_counterfactual_is_the_loss_with_one_token_erased(case):
    model, tokens, mask, chain, answer = case
    got = np.asarray(ablation_effect(model, tokens, mask, chain, answer, layers=(1,), max_answer=16, chunk=4))
    h = _hidden(model, tokens, mask, 1)
    base = np.asarray(answer_loss(model, tokens, mask, answer))
    for slot in (3, 5, 8):
        erase = -h * (jnp.arange(tokens.shape[1]) == slot)[None, :, None]
        want = np.asarray(answer_loss(model, tokens, mask, answer, perturb={1: erase})) - base
        np.testing.assert_allclose(got[:, slot], want * np.asarray(chain)[:, slot], rtol=1e-4, atol=1e-6)
    assert np.all(got[~np.asarray(chain)] == 0)


def test_counterfactual_over_the_chain_span_equals_every_slot(case):
    """The scorer ablates only the slots from the first chain token to the last (`chain_span`):
    the same scores on the chain as ablating every slot."""
    model, tokens, mask, chain, answer = case
    assert chain_span(np.asarray(chain), step=4) == (3, 8)  # chains at 3..10: 8 slots, kept inside T = 16
    assert chain_span(np.asarray(chain), step=32) == (0, 16)  # wider than the row: the whole row
    assert chain_span(np.zeros((2, 16), bool), step=4) == (0, 4)
    every = np.asarray(ablation_effect(model, tokens, mask, chain, answer, layers=(1,), max_answer=16, chunk=4))
    span = np.asarray(ablation_effect(model, tokens, mask, chain, answer, layers=(1,), max_answer=16, chunk=4,
                                      span=chain_span(np.asarray(chain), step=4)))
    np.testing.assert_allclose(span, every, rtol=1e-5, atol=1e-7)
    assert np.abs(every).max() > 0


def test_answer_attention_is_a_distribution_over_earlier_tokens(case):
    model, tokens, mask, chain, answer = case
    everything = mask  # every real token as a "chain" token: the mass sums to one per row
    mass = np.asarray(answer_attention(model, tokens, mask, everything, answer))
    np.testing.assert_allclose(mass.sum(-1), 1.0, rtol=1e-5)
    for i, n in enumerate(LENGTHS):
        assert np.all(mass[i, n - 2:] == 0)  # nothing after the answer is attended to (causal)
    on_chain = np.asarray(answer_attention(model, tokens, mask, chain, answer))
    np.testing.assert_allclose(on_chain, mass * np.asarray(chain), rtol=1e-6)


def test_self_information_and_the_reference_difference(case):
    model, tokens, mask, chain, answer = case
    other = init_model(model.config, 1)
    want = predictive_stats(other.forward(tokens, mask=mask).logits, tokens, mask)[1]
    np.testing.assert_allclose(np.asarray(self_information(other, tokens, mask)), np.asarray(want), rtol=1e-6)


def test_every_scorer_through_the_score_stage(tmp_path):
    from jaxcot.importance.config import ScoreConfig
    from jaxcot.importance.score import score_traces
    from jaxcot.models import save_hf
    from jaxcot.testbed.tokenizer import build_testbed_tokenizer

    tok = build_testbed_tokenizer(sample=20)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16)
    model = init_model(cfg, 0)
    save_hf(model, tmp_path / "same", tokenizer=tok)
    recs = [{"id": f"r{i}", "question": f"What is {i} plus 4?", "chain": f" {i} + 4 = {i + 4} .",
             "answer": f" The answer is {i + 4}."} for i in range(3)]
    names = ["gogi", "entropy", "self_info", "grad_x_act", "integrated_gradients", "attention", "counterfactual",
             "reference"]
    sc = ScoreConfig(scorers=names, layers=[1], options={"integrated_gradients": {"steps": 4},
                                                         "reference": {"model": str(tmp_path / "same")}})
    for rec in score_traces(model, tok, recs, sc, progress=False):
        s = rec["scores"]
        assert list(s)[-len(names):] == names
        assert all(len(s[k]) == len(s["pieces"]) and np.all(np.isfinite(s[k])) for k in names)
        assert np.allclose(s["reference"], 0.0, atol=1e-5)  # the model against itself
        assert max(s["counterfactual"]) != 0 and max(s["integrated_gradients"]) > 0
    with pytest.raises(ValueError, match="scorer 'reference' needs the reference model"):
        score_traces(model, tok, recs, ScoreConfig(scorers=["reference"]), progress=False)
