"""GoGI: finite differences, PyTorch autograd parity, answer-only loss, entropy, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_ref import hf_model, padded_batch, to_jax

from jaxcot.importance.gogi import (
    answer_loss,
    default_layer,
    goal_gradients,
    gogi_scores,
    head_stats,
    predictive_stats,
    prompt_split,
)

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]
LENGTHS = (14, 11, 16)


def spans(lengths=LENGTHS, t=None):
    """Right-padded rows: prompt 0..3, chain 3..n-5, answer n-5..n-2, two trailing tokens after."""
    t = t or max(lengths)
    chain = np.zeros((len(lengths), t), bool)
    answer = np.zeros((len(lengths), t), bool)
    for i, n in enumerate(lengths):
        chain[i, 3:n - 5] = True
        answer[i, n - 5:n - 2] = True
    return chain, answer


def torch_reference(hf, tokens, mask, answer, layer):
    """(dL_ans/dh^l [B,T,D], logits [B,T,V]) by autograd: a zero tensor with requires_grad is
    added to hidden_states[layer] by a forward hook (on the embeddings for layer 0, else on
    decoder layer `layer - 1`)."""
    b, t = tokens.shape
    delta = torch.zeros(b, t, hf.config.hidden_size, requires_grad=True)

    def hook(module, args, out):
        if isinstance(out, tuple):
            return (out[0] + delta,) + tuple(out[1:])
        return out + delta

    module = hf.model.embed_tokens if layer == 0 else hf.model.layers[layer - 1]
    handle = module.register_forward_hook(hook)
    try:
        pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
        out = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                 position_ids=torch.tensor(pos))
        logp = torch.log_softmax(out.logits.float(), -1)
        tgt = torch.tensor(tokens[:, 1:])
        nll = -torch.gather(logp[:, :-1], 2, tgt[..., None])[..., 0]
        loss = (nll * torch.tensor(answer[:, 1:], dtype=torch.float32)).sum()
        loss.backward()
    finally:
        handle.remove()
    return delta.grad.numpy(), out.logits.detach().float().numpy()


def np_entropy_selfinfo(logits, tokens, mask):
    lg = logits.astype(np.float64)
    lg = lg - lg.max(-1, keepdims=True)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    ent = np.zeros(tokens.shape)
    si = np.zeros(tokens.shape)
    for b in range(tokens.shape[0]):
        for t in range(1, tokens.shape[1]):
            if mask[b, t] and mask[b, t - 1]:
                ent[b, t] = -(np.exp(logp[b, t - 1]) * logp[b, t - 1]).sum()
                si[b, t] = -logp[b, t - 1, tokens[b, t]]
    return ent, si


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_torch_autograd(family):
    hf = hf_model(family, seed=3)
    model = to_jax(hf)
    tokens, mask = padded_batch(seed=1, lengths=LENGTHS)
    chain, answer = spans()
    n_layers = model.config.num_layers
    layer = default_layer(n_layers)
    ref_grad, ref_logits = torch_reference(hf, tokens, mask, answer, layer)
    out = gogi_scores(model, tokens, mask, chain, answer)  # default layer, L1
    ref_gogi = np.where(chain, np.abs(ref_grad).sum(-1), 0.0)
    assert rel_err(np.asarray(out.gogi), ref_gogi) <= 1e-4
    if family == "llama":  # raw gradients at the edge layers, and the L2 norm
        grads, _ = goal_gradients(model, tokens, mask, answer, layers=(0, n_layers))
        for layer, g in zip((0, n_layers), grads):
            ref = torch_reference(hf, tokens, mask, answer, layer)[0]
            assert rel_err(np.asarray(g)[mask], ref[mask]) <= 1e-4, layer
        l2 = gogi_scores(model, tokens, mask, chain, answer, norm="l2")
        ref_l2 = np.where(chain, np.sqrt((ref_grad ** 2).sum(-1)), 0.0)
        assert rel_err(np.asarray(l2.gogi), ref_l2) <= 1e-4
    ent, si = np_entropy_selfinfo(ref_logits, tokens, mask)
    np.testing.assert_allclose(np.asarray(out.entropy), ent, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.self_info), si, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.answer_loss), (si * answer).sum(1), rtol=1e-5)
    assert np.all(np.asarray(out.gogi)[~chain] == 0)


@pytest.mark.parametrize("chunk", [5, 16, 256])
def test_head_stats_in_chunks_match_full_logits(chunk):
    model = to_jax(hf_model("qwen2", seed=2))
    tokens, mask = padded_batch(seed=4, lengths=LENGTHS)  # 3 x 16 rows: chunks of 5 leave a remainder
    out = model(jnp.asarray(tokens), mask=jnp.asarray(mask), return_hidden=True)
    ent_ref, si_ref = np_entropy_selfinfo(np.asarray(out.logits), tokens, mask)
    for ent, si in (predictive_stats(out.logits, jnp.asarray(tokens), jnp.asarray(mask)),
                    head_stats(model, model.norm(out.hidden[-1]), jnp.asarray(tokens), jnp.asarray(mask), chunk=chunk)):
        np.testing.assert_allclose(np.asarray(ent), ent_ref, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(si), si_ref, atol=2e-5, rtol=1e-5)
    assert np.all(np.asarray(ent)[:, 0] == 0) and np.all(np.asarray(ent)[~mask] == 0)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_remat_gives_the_same_scores(family):
    """remat (what lets the pass shard its weights over fsdp) recomputes blocks: the same scores."""
    model = to_jax(hf_model(family, seed=7))
    tokens, mask = padded_batch(seed=3, lengths=LENGTHS)
    chain, answer = spans()
    plain = gogi_scores(model, tokens, mask, chain, answer, layers=(1,), skip_prompt=False)
    remat = gogi_scores(model, tokens, mask, chain, answer, layers=(1,), skip_prompt=False, remat=True)
    for a, b in ((remat.gogi, plain.gogi), (remat.entropy, plain.entropy), (remat.answer_loss, plain.answer_loss)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_prompt_prefill_skip_gives_the_same_scores(family):
    model = to_jax(hf_model(family, seed=6))
    lengths = (40, 33, 45, 1)  # the last row is a filler row (one token, no spans)
    tokens, mask = padded_batch(seed=2, lengths=lengths)
    chain = np.zeros(tokens.shape, bool)
    answer = np.zeros(tokens.shape, bool)
    for i, (start, n) in enumerate(zip((20, 27, 18), lengths)):
        chain[i, start:n - 6] = True
        answer[i, n - 6:n - 2] = True
    assert prompt_split(chain, answer) == 16  # earliest chain slot 18: slots 0..15 are a prefill
    full = gogi_scores(model, tokens, mask, chain, answer, layers=(0, 1), skip_prompt=False, per_layer=True)
    fast = gogi_scores(model, tokens, mask, chain, answer, layers=(0, 1), per_layer=True)
    np.testing.assert_allclose(np.asarray(fast.per_layer), np.asarray(full.per_layer), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(fast.answer_loss), np.asarray(full.answer_loss), rtol=1e-5)
    for a, b in ((fast.entropy, full.entropy), (fast.self_info, full.self_info)):
        a, b = np.asarray(a), np.asarray(b)
        assert np.all(a[:, :17] == 0)  # slot 16 has no prediction within the differentiated part
        np.testing.assert_allclose(a[:, 17:], b[:, 17:], rtol=1e-5, atol=1e-6)
    assert prompt_split(np.zeros((2, 8), bool), np.zeros((2, 8), bool)) == 0


def test_finite_differences():
    """<g, v> equals a finite difference of L_ans along random directions v of delta^l.

    The decoder computes norms, attention and logits in float32 by design (no float64 path), so
    the differences are taken in float32 with the fourth-order stencil
    (8 (L(h) - L(-h)) - (L(2h) - L(-2h))) / 12h at h = 3e-3: truncation O(h^4), round-off about
    1e-6 / h. Measured agreement: <= 2e-4 relative; the test allows 1e-3 * max(|fd|, 1)."""
    hf = hf_model("qwen3", seed=5)
    model = to_jax(hf)
    tokens, mask = padded_batch(seed=2, lengths=LENGTHS)
    _, answer = spans()
    layer = default_layer(2)
    (g,), _ = goal_gradients(model, tokens, mask, answer, layers=layer)
    rng = np.random.default_rng(0)
    h = 3e-3
    for _ in range(3):
        v = jnp.asarray(rng.standard_normal(tokens.shape + (hf.config.hidden_size,)) * mask[..., None], jnp.float32)

        def loss(e, v=v):
            return float(np.asarray(answer_loss(model, tokens, mask, answer, perturb={layer: e * v}), np.float64).sum())

        fd = (8 * (loss(h) - loss(-h)) - (loss(2 * h) - loss(-2 * h))) / (12 * h)
        ours = float(np.sum(np.asarray(g, np.float64) * np.asarray(v, np.float64)))
        assert abs(ours - fd) <= 1e-3 * max(abs(fd), 1.0), (ours, fd)
    wrong = np.roll(np.asarray(g, np.float64), 1, axis=1)  # gradients one slot off
    assert abs(float(np.sum(wrong * np.asarray(v))) - fd) > 1e-2 * max(abs(fd), 1.0)  # the check can fail


def test_answer_loss_covers_answer_tokens_only():
    hf = hf_model("llama", seed=4)
    model = to_jax(hf)
    tokens, mask = padded_batch(seed=3, lengths=LENGTHS)
    chain, answer = spans()
    (g,), loss = goal_gradients(model, tokens, mask, answer, layers=1)
    labels = tokens.copy()
    labels[:, 1] = (labels[:, 1] + 1) % 97  # a prompt position
    labels[:, 4] = (labels[:, 4] + 7) % 97  # a chain position
    (g2,), loss2 = goal_gradients(model, tokens, mask, answer, layers=1, labels=labels)
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(loss2))
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g2))
    labels[0, LENGTHS[0] - 4] = (labels[0, LENGTHS[0] - 4] + 1) % 97  # an answer position
    (_, ), loss3 = goal_gradients(model, tokens, mask, answer, layers=1, labels=labels)
    assert float(loss3[0]) != float(loss[0])
    np.testing.assert_array_equal(np.asarray(loss3[1:]), np.asarray(loss[1:]))
    g = np.asarray(g)
    for i, n in enumerate(LENGTHS):
        last_answer = n - 3
        # The last answer token is predicted from the slot before it: that slot and every later
        # one (the answer's last token, the tokens after the answer, padding) get zero gradient.
        assert np.all(g[i, last_answer:] == 0), i
        assert np.abs(g[i, :last_answer]).sum(-1).min() > 0


def test_multi_layer_average_and_per_layer():
    hf = hf_model("qwen2", seed=6)
    model = to_jax(hf)
    tokens, mask = padded_batch(seed=4, lengths=LENGTHS)
    chain, answer = spans()
    grads, _ = goal_gradients(model, tokens, mask, answer, layers=(0, 1, 2))
    single = [np.where(chain, np.abs(np.asarray(g)).sum(-1), 0.0) for g in grads]
    both = gogi_scores(model, tokens, mask, chain, answer, layers=(0, 1, 2), per_layer=True)
    np.testing.assert_allclose(np.asarray(both.gogi), np.mean(single, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(both.per_layer), np.stack(single), rtol=1e-5, atol=1e-7)
    small = gogi_scores(model, tokens, mask, chain, answer, layers=(0, 1, 2), max_answer=4)
    np.testing.assert_allclose(np.asarray(small.gogi), np.asarray(both.gogi), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="max_answer"):
        gogi_scores(model, tokens, mask, chain, answer, max_answer=2)
    with pytest.raises(ValueError, match="layers"):
        gogi_scores(model, tokens, mask, chain, answer, layers=7)


def test_sharded_batch_matches_single_device():
    from jaxcot.sharding import batch_sharding, make_mesh

    hf = hf_model("gemma3", seed=7)
    tokens, mask = padded_batch(seed=5, lengths=(9, 12, 16, 10, 13, 8, 15, 11))
    chain, answer = spans((9, 12, 16, 10, 13, 8, 15, 11))
    ref = gogi_scores(to_jax(hf), tokens, mask, chain, answer)
    mesh = make_mesh()
    assert mesh.shape["data"] == len(jax.devices()) == 8
    sh = batch_sharding(mesh)
    args = [jax.device_put(x, sh) for x in (tokens.astype(np.int32), mask, chain, answer)]
    out = gogi_scores(to_jax(hf, mesh=mesh), *args)
    assert len(out.gogi.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out.gogi), np.asarray(ref.gogi), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.entropy), np.asarray(ref.entropy), rtol=1e-5, atol=1e-6)
