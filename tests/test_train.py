"""SFT step and run: overfitting, completion-only loss, mesh equivalence, LoRA, non-finite loss."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_helpers import flat, max_diff, model_params, tiny_config

from jaxcot.models import load_hf
from jaxcot.programs import ProgramCache
from jaxcot.train import TrainingDiverged, train
from jaxcot.train.checkpoint import Checkpointer
from jaxcot.train.step import completion_nll_sum


def test_prompt_tokens_carry_no_loss():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 6, 11)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 11, (2, 6)))
    loss_mask = jnp.asarray([[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0]], bool)
    g = jax.grad(completion_nll_sum)(logits, tokens, loss_mask)
    # slot t predicts token t+1: gradient only where token t+1 is a completion token
    touched = np.abs(np.asarray(g)).sum(-1) > 0
    np.testing.assert_array_equal(touched, np.pad(np.asarray(loss_mask)[:, 1:], ((0, 0), (0, 1))))
    lp = jax.nn.log_softmax(logits[:, :-1], -1)
    picked = np.take_along_axis(np.asarray(lp), np.asarray(tokens)[:, 1:, None], -1)[..., 0]
    want = -(picked * np.asarray(loss_mask)[:, 1:]).sum()
    np.testing.assert_allclose(float(completion_nll_sum(logits, tokens, loss_mask)), want, rtol=1e-6)


@pytest.fixture(scope="module")
def compiled():
    return ProgramCache()


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, compiled):
    """4 examples, full fine-tuning from scratch for 150 steps, exported."""
    tmp = tmp_path_factory.mktemp("overfit")
    cfg = tiny_config(tmp, n_examples=4, epochs=150, optim=dict(lr=1e-2), export=True)
    return tmp, cfg, train(cfg, cache=compiled)


def test_tiny_model_overfits_and_loss_is_completion_mean(overfit, compiled):
    _, cfg, res = overfit
    assert res.status == "finished" and res.step == 150
    assert res.loss < 0.05, res.loss
    # the first logged loss is the mean NLL over completion tokens of the initial model
    import json

    first = json.loads(open(os.path.join(cfg.output_dir, "metrics.jsonl")).readline())
    from jaxcot.sharding import make_mesh
    from jaxcot.train.loop import init_sharded, prepare_data, resolve_model_config

    tok, exs, rows, _ = prepare_data(cfg, res.tokenizer, verbose=False)
    mesh = make_mesh(devices=jax.devices()[:1])
    init = init_sharded(resolve_model_config(cfg, tok), cfg.seed, mesh, dtype=jnp.float32,
                        param_dtype=jnp.float32, cache=compiled)  # the run's own initial weights
    batch = [exs[r[0]] for r in rows[:4]]  # the first global batch
    tokens = np.zeros((4, 48), np.int32)
    for j, ex in enumerate(batch):
        tokens[j, : ex.length] = ex.ids
    g, st = nnx.split(init)
    logits = jax.jit(lambda s, x: nnx.merge(g, s)(x).logits)(st, jnp.asarray(tokens))
    lp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    nll, n = 0.0, 0
    for j, ex in enumerate(batch):
        for t in range(ex.n_prompt, ex.length):  # completion tokens only, causal: padding after is unseen
            nll -= lp[j, t - 1, ex.ids[t]]
            n += 1
    assert first["target_tokens"] == n
    np.testing.assert_allclose(first["loss"], nll / n, rtol=2e-5)
    # the export loads back with the trained weights
    back = load_hf(res.export_dir)
    assert max_diff(model_params(back), model_params(res.model)) == 0.0


def test_lora_keeps_base_and_exports_merged(overfit):
    tmp, _, base_res = overfit  # init_from a previous export
    base_dir = base_res.export_dir
    cfg = tiny_config(
        tmp, "lora", model=None, init_from=base_dir, tokenizer=None, method="lora", max_steps=4, export=True,
        lora=dict(rank=4, alpha=8.0, dropout=0.1, targets=["q_proj", "v_proj", "down_proj"]),
    )
    res = train(cfg)
    base = model_params(load_hf(base_dir))
    trained = res.model
    base_now = flat(nnx.state(trained, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))).to_pure_dict())
    for k in base:  # bit-identical base weights
        np.testing.assert_array_equal(base_now[k], base[k], err_msg=k)
    lora = flat(nnx.state(trained, nnx.LoRAParam).to_pure_dict())
    assert len(lora) == 2 * 3 * 2 and any(np.abs(v).max() > 0 for k, v in lora.items() if k.endswith("lora_b"))
    merged = model_params(load_hf(res.export_dir))
    scale = 8.0 / 4
    for k, v in merged.items():
        layer = k.rsplit("/", 1)[0]
        if layer + "/lora_a" in lora:
            delta = lora[layer + "/lora_a"].astype(np.float64) @ lora[layer + "/lora_b"]
            want = base[k].astype(np.float64) + scale * delta
            np.testing.assert_allclose(v, want, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(v, base[k], err_msg=k)
    assert np.abs(merged["layers/0/self_attn/q_proj/kernel"] - base["layers/0/self_attn/q_proj/kernel"]).max() > 0
    import safetensors.numpy

    names = safetensors.numpy.load_file(os.path.join(res.export_dir, "model.safetensors")).keys()
    assert not any("lora" in n for n in names)
    # the factors alone, as a PEFT adapter folder beside it, load back onto the base to the same model
    from jaxcot.models import load_model

    assert res.adapter_dir == res.export_dir + "-adapter"
    adapted = load_model(res.adapter_dir)
    tokens = jnp.asarray(np.arange(3, 23, dtype=np.int32).reshape(2, 10) % merged["embed_tokens"].shape[0])
    np.testing.assert_allclose(np.asarray(adapted(tokens).logits), np.asarray(load_hf(res.export_dir)(tokens).logits),
                               atol=1e-5)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, "nan", optim=dict(lr=1e30, clip_norm=0.0), checkpoint=dict(every=1, keep=5), epochs=3)
    with pytest.raises(TrainingDiverged, match=r"step (\d+): loss .*not finite.*last good checkpoint is step") as e:
        train(cfg)
    bad = int(str(e.value).split()[1].rstrip(":"))
    ck = Checkpointer(os.path.join(cfg.output_dir, "checkpoints"), keep=5)
    assert ck.latest_step() == bad - 1
    meta = ck.read_meta(bad - 1)
    assert np.isfinite(meta["loss"]) and meta["step"] == bad - 1
    ck.close()


def test_remat_gives_the_same_training(tmp_path):
    """remat recomputes each block in the backward pass: the same steps, the same weights."""
    plain = train(tiny_config(tmp_path, "plain", max_steps=3, epochs=None))
    remat = train(tiny_config(tmp_path, "remat", max_steps=3, epochs=None, remat=True))
    assert remat.step == plain.step == 3 and remat.loss == pytest.approx(plain.loss, rel=1e-6)
    assert max_diff(model_params(plain.model), model_params(remat.model)) <= 1e-6
