"""Hub ids: `load_model("org/name")` and every command read a model from the Hugging Face cache
(offline here: a cache laid out as huggingface_hub writes it); a missing one is a clear error."""

from __future__ import annotations

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcot.models import init_model, load_model, load_tokenizer, save_hf
from jaxcot.models.config import ModelConfig
from jaxcot.models.loading import model_inputs, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding org/tiny at `main` (offline: the cache alone answers)."""
    import huggingface_hub.constants as constants

    from jaxcot.data.wordtok import build_word_tokenizer

    cache = tmp_path / "hub"
    snap = cache / "models--org--tiny" / "snapshots" / COMMIT
    cfg = ModelConfig(family="llama", vocab_size=24, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=64)
    model = init_model(cfg, seed=0)
    tok = build_word_tokenizer(["the cat sat on the mat", "one two three"])
    save_hf(model, snap, tokenizer=tok)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", os.fspath(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", os.fspath(cache))
    return model, os.fspath(snap)


def test_hub_id_loads_from_the_cache(hub_cache, tmp_path, monkeypatch):
    model, snap = hub_cache
    monkeypatch.chdir(tmp_path)  # no local folder named org/tiny
    assert resolve_model("org/tiny") == snap and resolve_model(f"org/tiny@{COMMIT}") == snap
    got = load_model("org/tiny")
    tokens = jnp.asarray(np.arange(1, 13, dtype=np.int32).reshape(2, 6))
    np.testing.assert_array_equal(np.asarray(got(tokens).logits), np.asarray(model(tokens).logits))
    assert load_tokenizer("org/tiny")("the cat")["input_ids"]
    assert model_inputs("org/tiny") == {"model": snap}  # provenance hashes the files, not the name


def test_a_local_folder_wins_over_a_hub_id(hub_cache, tmp_path, monkeypatch):
    _, snap = hub_cache
    monkeypatch.chdir(tmp_path)
    shutil.copytree(snap, tmp_path / "org" / "tiny")
    assert resolve_model("org/tiny") == "org/tiny"


def test_missing_hub_model_offline_is_a_clear_error(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"org/absent: not a local path.*cannot be reached and the Hugging "
                                                r"Face cache \(.*/hub\) does not hold it.*hf download org/absent"):
        load_model("org/absent")
    assert resolve_model("no-slash-name") == "no-slash-name"  # not a hub id: the caller's own error
