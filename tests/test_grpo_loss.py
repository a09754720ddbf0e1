"""GRPO's arithmetic against a PyTorch reference written from TRL's GRPOTrainer loss: the loss
and its gradient agree to 1e-5 for both aggregations, with and without the KL term and with and
without stored old log-probabilities; the first iteration's ratio is exactly 1, the KL is zero
when the policy is the reference, and a group with equal rewards has zero advantages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcot.rl.loss import LossSettings, aggregate, group_advantages, grpo_loss, per_token_objective, token_logprobs

torch = pytest.importorskip("torch")

R, T, G = 8, 12, 4


def batch(seed=0):
    rng = np.random.default_rng(seed)
    logps = rng.normal(-2.0, 0.7, (R, T)).astype(np.float32)
    old = (logps + rng.normal(0, 0.3, (R, T))).astype(np.float32)  # far enough for the clip to act
    ref = (logps + rng.normal(0, 0.2, (R, T))).astype(np.float32)
    adv = rng.normal(0, 1, R).astype(np.float32)
    mask = np.zeros((R, T), bool)
    for r in range(R):  # completions of different lengths after a prompt of 3
        mask[r, 3:3 + 1 + rng.integers(1, T - 3)] = True
    return logps, old, ref, adv, mask


def trl_loss(per_token_logps, old, ref, adv, mask, *, beta, loss_type, eps_low=0.2, eps_high=0.2):
    """TRL's GRPOTrainer._compute_loss, token for token (per_token_logps a leaf tensor)."""
    if old is None:
        old = per_token_logps.detach()
    coef_1 = torch.exp(per_token_logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
    if beta != 0.0:
        kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
        per_token_loss = per_token_loss + beta * kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("with_old", [True, False])
def test_loss_and_gradient_match_trl(loss_type, beta, with_old):
    logps, old, ref, adv, mask = batch()
    settings = LossSettings(0.2, 0.2, beta, loss_type)

    def ours(lp):
        return grpo_loss(lp, jnp.asarray(old) if with_old else None, jnp.asarray(ref), jnp.asarray(adv),
                         jnp.asarray(mask), settings)[0]

    loss, grad = jax.value_and_grad(ours)(jnp.asarray(logps))
    lp_t = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
    ref_loss = trl_loss(lp_t, torch.tensor(old, dtype=torch.float64) if with_old else None,
                        torch.tensor(ref, dtype=torch.float64), torch.tensor(adv, dtype=torch.float64),
                        torch.tensor(mask, dtype=torch.float64), beta=beta, loss_type=loss_type)
    ref_loss.backward()
    np.testing.assert_allclose(float(loss), ref_loss.item(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), lp_t.grad.numpy(), atol=1e-5, rtol=1e-5)
    assert np.abs(lp_t.grad.numpy()).sum() > 0  # the comparison is not of zeros


def test_clipping_acts_in_the_reference_batch():
    logps, old, ref, adv, mask = batch()
    _, parts = per_token_objective(jnp.asarray(logps), jnp.asarray(old), None, jnp.asarray(adv), LossSettings())
    clipped = np.asarray(parts["clipped"]) & mask
    assert 0 < clipped.sum() < mask.sum()


def test_asymmetric_clip_matches_trl():
    logps, old, ref, adv, mask = batch(3)
    settings = LossSettings(0.2, 0.28, 0.0, "dapo")
    f = lambda lp: grpo_loss(lp, jnp.asarray(old), None, jnp.asarray(adv), jnp.asarray(mask), settings)[0]  # noqa
    loss, grad = jax.value_and_grad(f)(jnp.asarray(logps))
    lp_t = torch.tensor(logps, dtype=torch.float64, requires_grad=True)
    want = trl_loss(lp_t, torch.tensor(old, dtype=torch.float64), None, torch.tensor(adv, dtype=torch.float64),
                    torch.tensor(mask, dtype=torch.float64), beta=0.0, loss_type="dapo", eps_high=0.28)
    want.backward()
    np.testing.assert_allclose(float(loss), want.item(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), lp_t.grad.numpy(), atol=1e-5)


def test_first_iteration_ratio_is_exactly_one_and_kl_zero_at_the_reference():
    logps, _, _, adv, mask = batch(1)
    lp = jnp.asarray(logps)
    _, stats = grpo_loss(lp, None, lp, jnp.asarray(adv), jnp.asarray(mask), LossSettings(beta=0.04))
    assert float(stats["ratio"]) == float(mask.sum())  # every token's ratio is 1.0 exactly
    assert float(stats["kl"]) == 0.0
    assert float(stats["clip_ratio"]) == 0.0


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_micro_batches_add_up_to_the_batch(loss_type):
    logps, old, ref, adv, mask = batch(2)
    s = LossSettings(beta=0.04, loss_type=loss_type)
    args = lambda sl: (jnp.asarray(logps[sl]), jnp.asarray(old[sl]), jnp.asarray(ref[sl]), jnp.asarray(adv[sl]),  # noqa
                       jnp.asarray(mask[sl]))
    whole = float(grpo_loss(*args(slice(None)), s)[0])
    parts = sum(float(grpo_loss(*args(slice(i, i + R // 2)), s, rows=R, tokens=float(mask.sum()))[0])
                for i in (0, R // 2))
    np.testing.assert_allclose(parts, whole, rtol=1e-6)


def test_advantages_match_trl_and_vanish_for_equal_rewards():
    rewards = np.array([2.0, 0.0, 1.0, 3.0, 1.5, 1.5, 1.5, 1.5], np.float32)
    adv = group_advantages(rewards, G)
    grouped = torch.tensor(rewards).view(-1, G)
    mean, std = grouped.mean(1).repeat_interleave(G), grouped.std(1).repeat_interleave(G)
    want = (torch.tensor(rewards) - mean) / (std + 1e-4)
    np.testing.assert_allclose(adv, want.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(adv[G:] == 0.0)
    unscaled = group_advantages(rewards, G, scale=False)
    np.testing.assert_allclose(unscaled[:G], rewards[:G] - rewards[:G].mean())
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards[:6], G)


def test_token_logprobs_match_log_softmax_at_temperature():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (3, 7, 11)).astype(np.float32)
    tokens = rng.integers(0, 11, (3, 7))
    ours = np.asarray(token_logprobs(jnp.asarray(logits), jnp.asarray(tokens), 0.6))
    logp = torch.log_softmax(torch.tensor(logits[:, :-1]) / 0.6, -1)
    want = logp.gather(-1, torch.tensor(tokens[:, 1:, None]))[..., 0]
    np.testing.assert_allclose(ours[:, 1:], want.numpy(), atol=1e-5)
    assert np.all(ours[:, 0] == 0.0)


def test_aggregate_rejects_unknown_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        aggregate(jnp.zeros((2, 3)), jnp.ones((2, 3), bool), "dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        LossSettings(loss_type="mean")
