"""Logits parity with transformers' PyTorch models, full forward and cached decoding."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_ref import hf_model, padded_batch, to_jax

from jaxcot.models.decoder import KVCache

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]


def hf_logits(hf, tokens, mask):
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                 position_ids=torch.tensor(pos))
    return out.logits.float().numpy()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("left", [False, True])
def test_logits_match_transformers(family, left):
    hf = hf_model(family)
    model = to_jax(hf)
    tokens, mask = padded_batch(left=left)
    ref = hf_logits(hf, tokens, mask)
    ours = np.asarray(model(jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask)).logits)
    diff = np.abs(ours - ref)[mask].max()
    assert diff <= 5e-6, f"{family}: max |diff| {diff}"  # the README's claim; logits are of size ~3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("limit_prefill", [False, True])
def test_cached_decoding_matches_full_forward(family, limit_prefill):
    hf = hf_model(family, seed=1)
    model = to_jax(hf)
    tokens, mask = padded_batch(seed=3, lengths=(11, 7, 14), left=True)
    tokens, mask = jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)
    full = np.asarray(model(tokens, mask=mask).logits)
    prefill = 5
    cache = KVCache.init(model.config, tokens.shape[0], 16)
    # limit_prefill: the prefill's attention reads none of the cache's (empty) slots (read_slots=0)
    out = model(tokens[:, :prefill], mask=mask[:, :prefill], cache=cache,
                read_slots=0 if limit_prefill else None)
    got = [np.asarray(out.logits)]
    cache = out.cache
    for t in range(prefill, tokens.shape[1]):
        out = model(tokens[:, t:t + 1], mask=mask[:, t:t + 1], cache=cache)
        cache = out.cache
        got.append(np.asarray(out.logits))
    got = np.concatenate(got, axis=1)
    m = np.asarray(mask)
    diff = np.abs(got - full)[m].max()
    assert diff <= 1e-4, f"{family}: cached vs full max |diff| {diff}"
    assert int(cache.end) == tokens.shape[1]


def test_right_padded_prefill_then_decode_positions():
    """After a right-padded prefill, each row continues from its own length (gap slots masked)."""
    hf = hf_model("llama", seed=2)
    model = to_jax(hf)
    tokens, mask = padded_batch(seed=5, lengths=(4, 8), left=False)
    nxt = np.array([[7], [9]])
    cache = KVCache.init(model.config, 2, 12)
    out = model.prefill(jnp.asarray(tokens, jnp.int32), cache, mask=jnp.asarray(mask))
    step = model.decode_step(jnp.asarray(nxt[:, 0], jnp.int32), out.cache)
    # calling the model with a cache is `prefill`, the same program as a one-token decode step
    called = model(jnp.asarray(nxt, jnp.int32), cache=out.cache)
    for x, y in zip((step.logits, *step.cache.k, step.cache.pos), (called.logits, *called.cache.k, called.cache.pos)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for row, n in enumerate((4, 8)):
        seq = np.concatenate([tokens[row, :n], nxt[row]])[None]
        ref = hf_logits(hf, seq, np.ones_like(seq, bool))[0, -1]
        assert np.abs(np.asarray(step.logits)[row, 0] - ref).max() <= 1e-4


def test_read_slots_needs_a_cache_and_a_slot_count_inside_it():
    hf = hf_model("llama", seed=2)
    model = to_jax(hf)
    tokens = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="needs a cache"):
        model(tokens, read_slots=4)
    with pytest.raises(ValueError, match="outside 0..8"):
        model(tokens, cache=KVCache.init(model.config, 1, 8), read_slots=9)


def test_unembed_few_and_many_rows_agree():
    # up to FEW_ROWS rows the tied unembedding takes the [V, rows] product; both forms are the
    # same logits, and the few-row form is differentiable (GoGI's answer slots can be few)
    import jax

    from jaxcot.models.layers import FEW_ROWS

    model = to_jax(hf_model("qwen2", seed=3))  # tied embeddings
    assert model.lm_head is None
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((2, FEW_ROWS, model.config.hidden_size)), jnp.float32)  # 2x the bound
    many = model.unembed(h)
    few = model.unembed(h[:1, :5])
    np.testing.assert_allclose(few, many[:1, :5], rtol=1e-5, atol=1e-5)
    direct = jnp.einsum("btd,vd->btv", h[:1, :5], model.embed_tokens[...])
    np.testing.assert_allclose(few, direct, rtol=1e-5, atol=1e-5)
    g_few = jax.grad(lambda x: jnp.sum(jnp.sin(model.unembed(x))))(h[:1, :5])
    g_ref = jax.grad(lambda x: jnp.sum(jnp.sin(jnp.einsum("btd,vd->btv", x, model.embed_tokens[...]))))(h[:1, :5])
    np.testing.assert_allclose(g_few, g_ref, rtol=1e-4, atol=1e-5)


def test_without_logits_the_cache_and_hidden_states_are_unchanged():
    from jaxcot.models.decoder import KVCache

    model = to_jax(hf_model("llama", seed=2))
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, model.config.vocab_size, (2, 9)), jnp.int32)
    cache = KVCache.init(model.config, 2, 12)
    full = model(tokens, cache=cache, read_slots=0, return_hidden=True)
    bare = model(tokens, cache=cache, read_slots=0, return_hidden=True, with_logits=False)
    assert bare.logits is None and full.logits.shape == (2, 9, model.config.vocab_size)
    for a, b in zip(full.hidden + full.cache.k + full.cache.v, bare.hidden + bare.cache.k + bare.cache.v):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_cache_update_ignores_stale_slots_past_its_end():
    # Keys come from the cache's slots before `end` plus the new tokens: slots at or past `end`
    # that still hold an earlier pass's keys (a rewound cache) are not attended to.
    model = to_jax(hf_model("qwen3", seed=2))
    tokens = jnp.asarray(np.random.default_rng(2).integers(3, model.config.vocab_size, (2, 9)), jnp.int32)
    first = model(tokens, cache=KVCache.init(model.config, 2, 12)).cache
    other = tokens.at[:, 5:].set(7)
    rewound = first.replace(end=jnp.asarray(5, jnp.int32))  # slots 5..8 still hold `tokens`' keys
    positions = jnp.broadcast_to(jnp.arange(5, 9, dtype=jnp.int32), (2, 4))  # not counted from `valid`
    got = model(other[:, 5:], positions, cache=rewound).logits
    want = model(other).logits[:, 5:]
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_for_decoding_gives_the_same_logits(family):
    from jaxcot.models.decoder import fuse_for_decoding

    model = to_jax(hf_model(family, seed=6))
    fused = fuse_for_decoding(model)
    assert model.layers[0].self_attn.q_proj is not None  # the original is left as it was
    attn = fused.layers[0].self_attn
    assert attn.q_proj is None and attn.qkv_proj.out_in and fused.layers[0].mlp.gate_up_proj.out_in
    rng = np.random.default_rng(3)
    for rows in (3, 70):  # the few-row and many-row products of an [out, in] kernel
        tokens = jnp.asarray(rng.integers(3, model.config.vocab_size, (1, rows)), jnp.int32)
        np.testing.assert_allclose(fused(tokens).logits, model(tokens).logits, atol=2e-5)
    cache = KVCache.init(model.config, 1, 8)
    a, b = model(tokens[:, :4], cache=cache), fused(tokens[:, :4], cache=cache)
    for x, y in zip(a.cache.k + a.cache.v, b.cache.k + b.cache.v):
        np.testing.assert_allclose(x, y, atol=2e-5)


def test_fusing_merges_lora_and_an_untied_head_and_refuses_export_and_lora(tmp_path):
    import jax
    from flax import nnx

    from jaxcot.models import ModelConfig, init_model, save_hf
    from jaxcot.models.decoder import fuse_for_decoding
    from jaxcot.models.layers import Linear

    cfg = ModelConfig(family="qwen2", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True, tie_word_embeddings=False)
    model = init_model(cfg, seed=1)
    rngs = nnx.Rngs(5)
    for lin in (model.layers[0].self_attn.k_proj, model.layers[1].mlp.up_proj):
        lin.attach_lora(4, 8.0, rngs=rngs)
        lin.lora_b[...] = jax.random.normal(rngs.params(), lin.lora_b[...].shape) * 0.1
    fused = fuse_for_decoding(model)
    assert fused.lm_head.out_in and fused.layers[0].self_attn.qkv_proj.lora_a is None
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, 64, (2, 6)), jnp.int32)
    np.testing.assert_allclose(fused(tokens).logits, model(tokens).logits, atol=2e-5)
    with pytest.raises(ValueError, match="fused for decoding"):
        save_hf(fused, tmp_path / "out")
    with pytest.raises(ValueError, match="fused for decoding"):
        fused.layers[0].mlp.down_proj.attach_lora(2, 2.0, rngs=rngs)
    with pytest.raises(ValueError, match="one input size"):
        Linear.stacked([model.layers[0].self_attn.q_proj, model.layers[0].mlp.down_proj])
    with pytest.raises(ValueError, match="expected"):
        Linear(4, 6, kernel=jnp.zeros((4, 6)), out_in=True)
