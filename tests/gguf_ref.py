"""Write tiny GGUF files from HF models the way llama.cpp's `convert_hf_to_gguf.py` does.

Independent of jaxcot's loader on purpose (its own name table, permutation and norm shift), so
the loader is tested against the converter's conventions, not against itself.
"""

from __future__ import annotations

import math

import gguf
import numpy as np

ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3"}

# HF module suffix -> GGUF block tensor (llama.cpp's tensor_mapping.py).
_BLOCK = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
}
_BLOCK_LLAMA = {"post_attention_layernorm": "ffn_norm"}
_BLOCK_GEMMA = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm"}


def llamacpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """`LlamaModel.permute` from convert_hf_to_gguf.py."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """`LlamaModel.generate_extra_tensors`: the rope_freqs tensor for Llama-3 scaling."""
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, low, high = rope["factor"], rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)


def gguf_name(hf_name: str, family: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, leaf = rest.rsplit(".", 1)
    table = {**_BLOCK, **(_BLOCK_GEMMA if family == "gemma3" else _BLOCK_LLAMA)}
    return f"blk.{layer}.{table[module]}.{leaf}"


def quantized(arr: np.ndarray, qtype, rng: np.random.Generator) -> np.ndarray:
    """`arr` [rows, cols] as GGUF blocks of `qtype` (uint8 [rows, bytes per row]).

    Types gguf-py can quantize (Q8_0, Q5_0, Q4_1, ...) quantize `arr`; for the K-quants it cannot
    (Q4_K, Q5_K, Q6_K) the blocks are random bytes with scales of the size `arr`'s values have:
    what matters is that the file holds real blocks of that type, whose dequantized values the
    reference model then takes (`dequantized_state`).
    """
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

    if qtype not in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        return quants.quantize(arr.astype(np.float32), qtype)
    block, size = GGML_QUANT_SIZES[qtype]
    rows, cols = arr.shape
    blocks = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    scale = float(np.abs(arr).mean())
    # f16 scale fields: Q4_K / Q5_K start with d, dmin; Q6_K ends with d (ggml's block layouts)
    d = {Q.Q4_K: scale / 400, Q.Q5_K: scale / 800, Q.Q6_K: scale / 1500}[qtype]
    half = rng.uniform(0.5, 1.5, (rows, cols // block, 2)).astype(np.float16) * np.float16(d)
    if qtype == Q.Q6_K:
        blocks[..., size - 2:] = half[..., :1].view(np.uint8)
    else:
        blocks[..., :4] = half.view(np.uint8).reshape(rows, cols // block, 4)
    return blocks.reshape(rows, -1)


def write_gguf(hf, path, *, arch: str | None = None, window_pattern: bool = True, drop: str | None = None,
               chat_template: str | None = None, attn_scale: bool = False, qtypes: dict | None = None,
               seed: int = 0, tokenizer_from: str | None = None) -> str:
    """Write `hf` (a float32 transformers causal LM) as a GGUF file at `path` (F32 tensors).

    window_pattern: for gemma3, write the per-layer sliding pattern (else the reader's default
    period-6 rule applies); attn_scale: write `{arch}.attention.scale` from query_pre_attn_scalar
    (llama.cpp's gemma3 converter does not; the reader then uses head_dim); drop: a GGUF tensor
    name to leave out (error tests). qtypes: {GGUF tensor name suffix (e.g. "attn_q.weight"):
    GGMLQuantizationType} stores those tensors quantized (`quantized`), as llama.cpp's mixed
    quantizations do. tokenizer_from: a GGUF file whose tokenizer (vocabulary, merges, special
    ids, chat template) is copied instead of a placeholder vocabulary.
    """
    cfg = hf.config
    family = ARCH[cfg.model_type]
    arch = arch or family
    rng = np.random.default_rng(seed)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    rope = cfg.rope_parameters
    if family == "gemma3":
        rope = rope["full_attention"]
        w.add_sliding_window(cfg.sliding_window)
        if window_pattern:
            w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
        if attn_scale:
            w.add_attention_scale(float(cfg.query_pre_attn_scalar) ** -0.5)
    w.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    if tokenizer_from:
        _copy_tokenizer(w, tokenizer_from, cfg.vocab_size)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"tok{i}" for i in range(cfg.vocab_size)])
        w.add_bos_token_id(cfg.bos_token_id)
        w.add_eos_token_id(cfg.eos_token_id)
        w.add_pad_token_id(cfg.pad_token_id)
    if chat_template:
        w.add_chat_template(chat_template)
    if rope.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(rope, head_dim))
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        arr = t.detach().float().numpy().copy()
        if family == "llama" and ".q_proj." in name:
            arr = llamacpp_permute(arr, cfg.num_attention_heads, cfg.num_attention_heads)
        elif family == "llama" and ".k_proj." in name:
            arr = llamacpp_permute(arr, cfg.num_attention_heads, cfg.num_key_value_heads)
        elif family == "gemma3" and name.endswith("norm.weight"):
            arr = arr + 1.0  # Gemma3Model.norm_shift
        gname = gguf_name(name, family)
        qtype = next((q for suffix, q in (qtypes or {}).items() if gname.endswith(suffix)), None)
        if gname == drop:
            continue
        if qtype is None:
            w.add_tensor(gname, arr)
        else:
            w.add_tensor(gname, quantized(arr, qtype, rng), raw_dtype=qtype)  # shape from the bytes
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def _copy_tokenizer(w, source: str, vocab_size: int) -> None:
    reader = gguf.GGUFReader(source)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        if key == "tokenizer.ggml.tokens" and len(value) != vocab_size:
            raise ValueError(f"{source}: {len(value)} tokens, the model has {vocab_size}")
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, vtype, sub_type=sub)


def unpermute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """The inverse of `llamacpp_permute`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantized_state(path, hf, dequantize=None) -> dict:
    """The HF state dict a GGUF written by `write_gguf` holds, every tensor dequantized by gguf-py
    (or by `dequantize(raw bytes, type name)`, e.g. `ggml_blocks.dequantize`) and the converter's
    permutation and norm shift undone: what a reference model must load to equal the file."""
    from gguf import GGUFReader, quants

    cfg = hf.config
    family = ARCH[cfg.model_type]
    by_gguf = {gguf_name(n, family): n for n in hf.state_dict()}
    out = {}
    for t in GGUFReader(str(path)).tensors:
        if t.name not in by_gguf:
            continue
        name = by_gguf[t.name]
        arr = (quants.dequantize(t.data, t.tensor_type) if dequantize is None
               else dequantize(np.asarray(t.data), t.tensor_type.name))
        arr = np.asarray(arr, np.float32).reshape([int(x) for x in reversed(t.shape)])
        if family == "llama" and ".q_proj." in name:
            arr = unpermute(arr, cfg.num_attention_heads, cfg.num_attention_heads)
        elif family == "llama" and ".k_proj." in name:
            arr = unpermute(arr, cfg.num_attention_heads, cfg.num_key_value_heads)
        elif family == "gemma3" and name.endswith("norm.weight"):
            arr = arr - 1.0
        out[name] = arr
    return out
