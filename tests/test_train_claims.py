"""What the README claims of training, each against an independent reference: gradient
accumulation equals one large batch, bf16 compute keeps float32 master weights, the schedule is
linear warmup then cosine, and the optimizer is AdamW with decay on matrices only (torch's)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from train_helpers import max_diff, model_params, tiny_config

from jaxcot.train import train
from jaxcot.train.config import OptimConfig
from jaxcot.train.step import make_optimizer, make_schedule

STEPS = dict(max_steps=3, batch_size=8, n_examples=24, optim=dict(lr=3e-3), checkpoint=dict(enabled=False))


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    """Two micro-batches of 4 rows give the update one batch of 8 gives (the loss is the mean
    over the batch's target tokens, not a mean of micro-batch means)."""
    one = train(tiny_config(tmp_path, "one", grad_accum=1, **STEPS))
    two = train(tiny_config(tmp_path, "two", grad_accum=2, **STEPS))
    four = train(tiny_config(tmp_path, "four", grad_accum=4, **STEPS))
    a, b, c = model_params(one.model), model_params(two.model), model_params(four.model)
    assert max_diff(a, b) <= 5e-6 and max_diff(a, c) <= 5e-6, (max_diff(a, b), max_diff(a, c))
    assert one.loss == pytest.approx(two.loss, rel=1e-6) and one.loss == pytest.approx(four.loss, rel=1e-6)


def test_bf16_compute_keeps_float32_master_weights(tmp_path):
    """compute_dtype bfloat16: the trained weights stay float32, the updates land on them (not
    rounded to bf16), and the run follows the float32 one closely."""
    f32 = train(tiny_config(tmp_path, "f32", **STEPS))
    bf16 = train(tiny_config(tmp_path, "bf16", compute_dtype="bfloat16", **STEPS))
    params = model_params(bf16.model)
    assert all(v.dtype == np.float32 for v in params.values())
    kernel = params["layers/0/self_attn/q_proj/kernel"]
    assert np.any(kernel.astype(np.float32) != kernel.astype(jnp.bfloat16).astype(np.float32))  # not bf16 values
    assert bf16.model.layers[0].self_attn.q_proj.dtype == jnp.bfloat16  # matmuls in bf16
    assert abs(bf16.loss - f32.loss) <= 0.05 * abs(f32.loss)
    assert max_diff(model_params(f32.model), params) <= 2e-2


@pytest.mark.parametrize("warmup_ratio,min_lr_ratio", [(0.1, 0.0), (0.3, 0.1), (0.0, 0.0)])
def test_schedule_is_linear_warmup_then_cosine(warmup_ratio, min_lr_ratio):
    total, lr = 50, 2e-3
    sched = make_schedule(OptimConfig(lr=lr, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio), total)
    warm = math.ceil(warmup_ratio * total)
    end = lr * min_lr_ratio
    for t in range(total + 1):
        want = lr * t / warm if t < warm else end + (lr - end) * 0.5 * (1 + math.cos(math.pi * (t - warm) /
                                                                                       (total - warm)))
        assert float(sched(t)) == pytest.approx(want, rel=1e-5, abs=1e-9), t


def test_optimizer_is_torch_adamw_with_decay_on_matrices_and_clipping():
    """Five steps of jaxcot's optimizer on a matrix and a vector equal torch.optim.AdamW's with
    weight decay on the matrix only, after global-norm clipping, under the same schedule."""
    optim = OptimConfig(lr=1e-2, warmup_steps=2, weight_decay=0.1, clip_norm=0.5, b1=0.9, b2=0.95, eps=1e-8)
    total = 5
    tx, sched = make_optimizer(optim, total)
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) * 2 for k, v in params.items()} for _ in range(total)]
    p, state = {k: jnp.asarray(v) for k, v in params.items()}, None
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)

    tw, tb = (torch.nn.Parameter(torch.tensor(params[k], dtype=torch.float64)) for k in ("w", "b"))
    opt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.1}, {"params": [tb], "weight_decay": 0.0}],
                            lr=1.0, betas=(0.9, 0.95), eps=1e-8)
    for step, g in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = float(sched(step))
        tw.grad, tb.grad = (torch.tensor(g[k], dtype=torch.float64) for k in ("w", "b"))
        torch.nn.utils.clip_grad_norm_([tw, tb], 0.5)
        opt.step()
    np.testing.assert_allclose(np.asarray(p["w"]), tw.detach().numpy(), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(p["b"]), tb.detach().numpy(), rtol=2e-5, atol=2e-6)
