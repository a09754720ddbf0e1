"""The same model, parameters placed by the sharding rules on an 8-device mesh, gives the same logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_ref import hf_model, padded_batch, to_jax

from jaxcot.sharding import batch_sharding, make_mesh, path_str


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_sharded_forward_matches_single_device(family):
    assert len(jax.devices()) >= 8, "conftest sets 8 simulated devices"
    hf = hf_model(family, seed=4)
    single = to_jax(hf)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = to_jax(hf, mesh=mesh)
    _, state = nnx.split(sharded, nnx.Param)
    specs = {path_str(p): v.sharding.spec for p, v in jax.tree_util.tree_leaves_with_path(state)}
    assert specs["layers/0/self_attn/q_proj/kernel"] == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert specs["layers/0/mlp/down_proj/kernel"] == jax.sharding.PartitionSpec("tensor", "fsdp")
    tokens, mask = padded_batch(seed=1, lengths=(5, 9, 7, 3), left=True)
    tokens = jax.device_put(jnp.asarray(tokens, jnp.int32), batch_sharding(mesh))
    mask = jax.device_put(jnp.asarray(mask), batch_sharding(mesh))

    @nnx.jit
    def fwd(m, t, k):
        return m(t, mask=k).logits

    got = np.asarray(fwd(sharded, tokens, mask))
    ref = np.asarray(single(jnp.asarray(np.asarray(tokens)), mask=jnp.asarray(np.asarray(mask))).logits)
    m = np.asarray(mask)
    assert np.abs(got - ref)[m].max() <= 1e-5


def test_bf16_compute_is_close():
    hf = hf_model("qwen2", seed=2)
    f32 = to_jax(hf)
    bf16 = to_jax(hf, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    tokens, mask = padded_batch(seed=2)
    a = np.asarray(f32(jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask)).logits)
    b = np.asarray(bf16(jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask)).logits)
    assert b.dtype == np.float32  # logits always float32
    assert np.abs(a - b)[mask].max() < 0.1
    assert (a.argmax(-1) == b.argmax(-1))[mask].mean() > 0.9
