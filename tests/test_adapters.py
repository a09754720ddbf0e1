"""LoRA students exported as PEFT adapters: `peft` loads them onto transformers' base model with
the logits of jaxcot's merged model; jaxcot loads them back; bad adapters are refused by name."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_ref import VOCAB, hf_model, padded_batch

from jaxcot.models import apply_peft_adapter, is_peft_adapter, load_model, save_hf, save_peft_adapter
from jaxcot.models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from jaxcot.train.lora import apply_lora

peft = pytest.importorskip("peft")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _trained_lora(base_dir: str, seed: int = 0):
    """The base with LoRA on every linear layer, both factors random (as after training)."""
    model = load_model(base_dir)
    apply_lora(model, rank=4, alpha=8.0, targets=TARGETS, seed=seed)
    rng = np.random.default_rng(seed)
    from jaxcot.models.adapters import linear_layers

    for _, m in linear_layers(model):
        if m.lora_b is not None:
            m.lora_b[...] = jnp.asarray(rng.normal(0, 0.05, m.lora_b.shape), jnp.float32)
    return model


@pytest.fixture(scope="module", params=["llama", "qwen2"])  # qwen2: tied embeddings and q/k/v biases
def base(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "base"
    hf_model(request.param).save_pretrained(folder)
    return request.param, os.fspath(folder)


def test_peft_loads_the_adapter_with_the_merged_models_logits(base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    family, base_dir = base
    model = _trained_lora(base_dir)
    adapter = save_peft_adapter(model, tmp_path / "adapter", base_model=base_dir)
    merged = save_hf(model, tmp_path / "merged")
    cfg = json.load(open(os.path.join(adapter, ADAPTER_CONFIG)))
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["base_model_name_or_path"]) == ("LORA", 4, 8.0, base_dir)
    assert sorted(cfg["target_modules"]) == sorted(TARGETS)

    tokens, mask = padded_batch(lengths=(11, 7, 12))
    ours = np.asarray(model(jnp.asarray(tokens), mask=jnp.asarray(mask)).logits)
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir).float().eval(), adapter)
        theirs = peft_model(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask)).logits.numpy()
        hf_merged = AutoModelForCausalLM.from_pretrained(merged).float().eval()
        merged_logits = hf_merged(input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask)).logits
    # every adapted layer carries the factors we wrote, none is left at PEFT's init
    n_lora = sum(1 for n, _ in peft_model.named_parameters() if "lora_B" in n)
    assert n_lora == 2 * len(TARGETS)
    for rows_mask, a, b in ((mask, theirs, merged_logits.numpy()), (mask, theirs, ours)):
        np.testing.assert_allclose(a[rows_mask], b[rows_mask], atol=1e-4)
    assert np.abs(ours[mask] - np.asarray(load_model(base_dir)(jnp.asarray(tokens), mask=jnp.asarray(mask)).logits)[
        mask]).max() > 1e-2  # the adapter changes the model: the comparison above is not vacuous


def test_adapter_round_trip_and_bf16(base, tmp_path):
    _, base_dir = base
    model = _trained_lora(base_dir, seed=1)
    tokens = jnp.asarray(np.arange(2, 26, dtype=np.int32).reshape(2, 12) % VOCAB)
    want = np.asarray(model(tokens).logits)
    f32 = save_peft_adapter(model, tmp_path / "f32", base_model=base_dir)
    assert is_peft_adapter(f32) and not is_peft_adapter(base_dir)
    np.testing.assert_allclose(np.asarray(load_model(f32)(tokens).logits), want, atol=1e-5)
    bf16 = save_peft_adapter(model, tmp_path / "bf16", base_model=base_dir, dtype=jnp.bfloat16)
    import ml_dtypes
    from safetensors.numpy import load_file

    saved = load_file(os.path.join(bf16, ADAPTER_WEIGHTS))
    assert all(v.dtype == ml_dtypes.bfloat16 for v in saved.values())
    size = lambda folder: os.path.getsize(os.path.join(folder, ADAPTER_WEIGHTS))  # noqa: E731
    assert size(bf16) < 0.6 * size(f32)
    np.testing.assert_allclose(np.asarray(load_model(bf16)(tokens).logits), want, atol=5e-2)


def test_bad_adapters_are_refused_by_name(base, tmp_path):
    _, base_dir = base
    model = _trained_lora(base_dir)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_peft_adapter(load_model(base_dir), tmp_path / "none")
    good = save_peft_adapter(model, tmp_path / "good", base_model=base_dir)

    def variant(name, edit_config=None, edit_tensors=None):
        from safetensors.numpy import load_file, save_file

        folder = tmp_path / name
        folder.mkdir()
        cfg = json.load(open(os.path.join(good, ADAPTER_CONFIG)))
        tensors = load_file(os.path.join(good, ADAPTER_WEIGHTS))
        if edit_config:
            edit_config(cfg)
        if edit_tensors:
            edit_tensors(tensors)
        json.dump(cfg, open(folder / ADAPTER_CONFIG, "w"))
        save_file(tensors, os.fspath(folder / ADAPTER_WEIGHTS))
        return os.fspath(folder)

    rs = variant("rslora", edit_config=lambda c: c.update(use_rslora=True))
    with pytest.raises(ValueError, match="use_rslora"):
        apply_peft_adapter(load_model(base_dir), rs)
    extra = "base_model.model.model.layers.7.self_attn.q_proj"
    factors = {f"{extra}.lora_A.weight": np.zeros((4, 64), np.float32),
               f"{extra}.lora_B.weight": np.zeros((64, 4), np.float32)}
    unknown = variant("unknown", edit_tensors=lambda t: t.update(factors))
    with pytest.raises(ValueError, match=r"model\.layers\.7\.self_attn\.q_proj.*does not have"):
        apply_peft_adapter(load_model(base_dir), unknown)
    key = "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"
    shape = variant("shape", edit_tensors=lambda t: t.update({key: np.zeros((4, 3), np.float32)}))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.down_proj lora_A \(4, 3\)"):
        apply_peft_adapter(load_model(base_dir), shape)
    missing = variant("nobase", edit_config=lambda c: c.update(base_model_name_or_path="org/not-here"))
    with pytest.raises(FileNotFoundError, match="org/not-here"):
        load_model(missing)


def test_adapter_on_a_mesh_loads_sharded(base, tmp_path):
    _, base_dir = base
    model = _trained_lora(base_dir)
    folder = save_peft_adapter(model, tmp_path / "a", base_model=base_dir)
    tokens = jnp.asarray(np.arange(4, 20, dtype=np.int32).reshape(2, 8))
    want = np.asarray(model(tokens).logits)
    from jaxcot.sharding import make_mesh

    got = load_model(folder, mesh=make_mesh())
    np.testing.assert_allclose(np.asarray(jax.jit(lambda x: got(x).logits)(tokens)), want, atol=1e-5)
