"""Tiny random HF reference models (PyTorch) for parity tests, one per family."""

from __future__ import annotations

import os

import numpy as np
import torch

from jaxcot.models.config import ModelConfig
from jaxcot.models.params import build_model

VOCAB = 97


def hf_config(family: str):
    import transformers as tf

    common = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    if family == "llama":
        return tf.LlamaConfig(
            **common, head_dim=16, rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=32),
        )
    if family == "qwen2":
        return tf.Qwen2Config(**common, rms_norm_eps=1e-6, tie_word_embeddings=True,
                              rope_parameters=dict(rope_type="default", rope_theta=1000000.0))
    if family == "qwen3":
        return tf.Qwen3Config(**common, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=False,
                              rope_parameters=dict(rope_type="default", rope_theta=1000000.0))
    if family == "gemma3":
        return tf.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 3}, head_dim=16, rms_norm_eps=1e-6, query_pre_attn_scalar=12,
            sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters={"full_attention": dict(rope_type="linear", rope_theta=1000000.0, factor=2.0),
                             "sliding_attention": dict(rope_type="default", rope_theta=10000.0)},
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
            attn_implementation="eager",
        )
    raise ValueError(family)


def hf_model(family: str, seed: int = 0):
    """A float32 HF causal LM whose norm weights and biases are randomised too."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = hf_config(family)
    cls = {"llama": tf.LlamaForCausalLM, "qwen2": tf.Qwen2ForCausalLM, "qwen3": tf.Qwen3ForCausalLM,
           "gemma3": tf.Gemma3ForCausalLM}[family]
    model = cls(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norms and biases: away from their init
                p.copy_(torch.randn_like(p) * 0.3 + (0.0 if family == "gemma3" else 1.0) * ("norm" in name))
            else:
                p.copy_(torch.randn_like(p) * 0.08)
    return model


def to_jax(hf, **kw):
    """Our Decoder with the HF model's weights."""
    cfg = ModelConfig.from_hf_config(hf.config)
    sd = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    return build_model(cfg, lambda n: sd[n], sd.keys(), source="hf-test", **kw)


def padded_batch(seed: int = 0, lengths=(9, 6, 12), left: bool = False):
    """tokens [B, T], mask [B, T] for rows of the given lengths, right- or left-padded."""
    rng = np.random.default_rng(seed)
    t = max(lengths)
    tokens = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros((len(lengths), t), bool)
    for i, n in enumerate(lengths):
        sl = slice(t - n, t) if left else slice(0, n)
        tokens[i, sl] = rng.integers(3, VOCAB, n)
        mask[i, sl] = True
    return tokens, mask


def transformers_from_gguf(path: str):
    """transformers' own GGUF load (config mapping, dequantize, Q/K un-permutation), float32.

    `from_pretrained(gguf_file=...)` needs `accelerate`, which jaxcot does not depend on; this
    runs the same `load_gguf_checkpoint` it calls, into a model built from the GGUF's config.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = os.path.split(path)
    cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval()
