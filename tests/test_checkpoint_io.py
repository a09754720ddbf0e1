"""Checkpoint I/O: HF export round trip, sharded folders, GGUF files, errors that name the culprit."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from gguf_ref import dequantized_state, write_gguf
from hf_ref import hf_config, hf_model, padded_batch, to_jax
from safetensors.numpy import load_file, save_file

from jaxcot.models import load_hf, load_model, load_tokenizer, save_hf
from jaxcot.models.config import RopeConfig
from jaxcot.models.gguf import GGUFError, _llama3_rope
from jaxcot.models.layers import rope_inv_freq
from jaxcot.sharding import make_mesh

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]


def hf_logits(hf, tokens, mask):
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                 position_ids=torch.tensor(pos))
    return out.logits.float().numpy()


def jax_logits(model, tokens, mask):
    return np.asarray(model(jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask)).logits)


def max_diff(a, b, mask):
    return float(np.abs(a - b)[mask].max())


# -- HF folders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip(family, tmp_path):
    """jaxcot -> save_hf -> transformers from_pretrained: same logits; load_hf gives the same model."""
    from transformers import AutoModelForCausalLM

    src = hf_model(family, seed=4)
    ours = to_jax(src)
    tokens, mask = padded_batch(seed=2, left=True)
    expected = jax_logits(ours, tokens, mask)
    folder = save_hf(ours, tmp_path / "export")
    back = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    assert max_diff(hf_logits(back, tokens, mask), expected, mask) <= 1e-4
    reloaded = load_model(folder)
    assert reloaded.config == ours.config
    assert max_diff(jax_logits(reloaded, tokens, mask), expected, mask) <= 1e-6


def test_sharded_safetensors_with_index(tmp_path):
    ours = to_jax(hf_model("qwen3", seed=5))
    folder = save_hf(ours, tmp_path / "one")
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    tokens, mask = padded_batch(seed=1)
    assert max_diff(jax_logits(load_hf(folder), tokens, mask), jax_logits(ours, tokens, mask), mask) <= 1e-6


@pytest.fixture
def llama_folder(tmp_path):
    return save_hf(to_jax(hf_model("llama", seed=6)), tmp_path / "llama")


def _edit_tensors(folder, edit):
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor_is_named(llama_folder):
    _edit_tensors(llama_folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf(llama_folder)


def test_misshapen_tensor_is_named(llama_folder):
    def edit(t):
        t["model.layers.0.self_attn.v_proj.weight"] = t["model.layers.0.self_attn.v_proj.weight"][:-1]

    _edit_tensors(llama_folder, edit)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.v_proj\.weight.*shape"):
        load_hf(llama_folder)


def test_unexpected_tensor_is_named(llama_folder):
    _edit_tensors(llama_folder, lambda t: t.update({"model.layers.0.mystery.weight": np.ones(3, np.float32)}))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mystery\.weight"):
        load_hf(llama_folder)


def test_unsupported_architecture_is_named(llama_folder):
    cfg_path = os.path.join(llama_folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"])
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match="mistral"):
        load_model(llama_folder)


def _config_variants():
    """config.json dicts: each family as transformers 5 writes it, the shipped architectures, and
    llama / qwen2 ones as older or hand-written files have them (legacy RoPE keys, keys left out,
    nulls, an eos list)."""
    import glob

    out = {f: hf_config(f).to_dict() for f in FAMILIES}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in sorted(glob.glob(os.path.join(root, "configs", "arch", "*", "config.json"))):
        with open(path) as f:
            out[os.path.basename(os.path.dirname(path))] = json.load(f)
    base = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 256, "tie_word_embeddings": True, "rope_theta": 500000.0}
    out["llama-legacy-rope"] = dict(base, rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0,
                                                        "original_max_position_embeddings": 32})
    out["llama-bare"] = base
    out["llama-nulls"] = dict(base, head_dim=None, bos_token_id=None, pad_token_id=None, rope_scaling=None,
                              eos_token_id=[2, 7], hidden_act="gelu")
    out["qwen2-bare"] = dict(base, model_type="qwen2", rope_theta=1e6)
    out["qwen3-head-dim"] = dict(base, model_type="qwen3", head_dim=32)
    out["qwen3-no-head-dim"] = dict(base, model_type="qwen3")  # Qwen3Config's own default: AutoConfig
    out["llama-no-kv-heads"] = {k: v for k, v in base.items() if k != "num_key_value_heads"}  # AutoConfig
    out["llama-no-theta"] = {k: v for k, v in base.items() if k != "rope_theta"}  # AutoConfig
    return out


def test_config_json_read_without_transformers_as_autoconfig_reads_it(tmp_path):
    """`ModelConfig.from_hf` reads a llama / qwen2 / qwen3 config.json itself (AutoConfig imports
    torch: seconds of every command's start-up) and gets what AutoConfig gives; files it cannot
    read alike (gemma3, keys whose default differs by class) go through AutoConfig."""
    from transformers import AutoConfig

    from jaxcot.models.config import ModelConfig

    fast = set()
    for name, d in _config_variants().items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(d))
        ref = ModelConfig.from_hf_config(AutoConfig.from_pretrained(folder))
        mine = ModelConfig.from_hf_json(d)
        assert mine in (None, ref), (name, mine, ref)
        assert ModelConfig.from_hf(folder) == ref, name
        if mine is not None:
            fast.add(name)
    assert fast >= {"llama", "qwen2", "qwen3", "Qwen2.5-7B-Instruct", "llama-legacy-rope", "llama-bare",
                    "llama-nulls", "qwen2-bare", "qwen3-head-dim"}, fast
    assert not fast & {"gemma3", "gemma-3-4b-it", "qwen3-no-head-dim", "llama-no-kv-heads", "llama-no-theta"}


def test_safetensors_folder_loads_without_torch_or_compiling(llama_folder):
    """Loading a llama folder imports neither torch nor transformers' config machinery, and
    compiles nothing (the flax safetensors reader compiled a program per tensor shape)."""
    import subprocess
    import sys

    code = ("import sys; from jaxcot.models import load_model; load_model(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(llama_folder)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_LOG_COMPILES="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Compiling" not in proc.stderr, proc.stderr[-2000:]


def test_bf16_load(llama_folder):
    tokens, mask = padded_batch(seed=7)
    ref = jax_logits(load_hf(llama_folder), tokens, mask)
    low = load_hf(llama_folder, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    leaf = low.layers[0].self_attn.q_proj.kernel
    assert leaf[...].dtype == jnp.bfloat16
    got = jax_logits(low, tokens, mask)
    assert got.dtype == np.float32
    scale = np.abs(ref[mask]).max()
    assert max_diff(got, ref, mask) <= 0.05 * scale, (max_diff(got, ref, mask), scale)
    assert max_diff(got, ref, mask) > 0  # really computed in bf16


def test_load_model_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere")
    bogus = tmp_path / "weights.gguf"
    bogus.write_bytes(b"not a gguf file")
    with pytest.raises(ValueError, match="weights.gguf"):
        load_model(bogus)


def test_tokenizer_from_folder(tmp_path):
    from jaxcot.data.wordtok import build_word_tokenizer

    tok = build_word_tokenizer(["what is 2 plus 3 ?", "the answer is 5 ."])
    folder = save_hf(to_jax(hf_model("qwen2", seed=0)), tmp_path / "m", tokenizer=tok)
    loaded = load_tokenizer(folder)
    text = "what is 2 plus 3 ?"
    assert loaded.decode(loaded(text)["input_ids"]) == text
    prompt = loaded.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                        add_generation_prompt=True)
    assert prompt == f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


# -- GGUF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_logits_match_source(family, tmp_path):
    """A llama.cpp-style F32 GGUF (Q/K permuted, gemma norms +1, llama3 rope as rope_freqs) loads
    back to the source model's logits."""
    src = hf_model(family, seed=8)
    path = write_gguf(src, tmp_path / f"{family}.gguf", attn_scale=family == "gemma3")
    model = load_model(path)
    cfg = model.config
    assert (cfg.family, cfg.num_layers, cfg.tie_word_embeddings) == (family, src.config.num_hidden_layers,
                                                                      src.config.tie_word_embeddings)
    tokens, mask = padded_batch(seed=9, left=True)
    diff = max_diff(jax_logits(model, tokens, mask), hf_logits(src, tokens, mask), mask)
    assert diff <= 1e-4, f"{family}: max |diff| {diff}"


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_gguf_mixed_quantizations_load_as_dequantized(family, tmp_path):
    """A file mixing the quantizations llama.cpp's Q4_K_M writes (the Gemma-3-270M GGUF holds Q4_K,
    Q5_0, Q6_K and Q8_0 tensors) loads to the logits of a reference model holding gguf-py's
    dequantization of the same blocks, within the 2e-5 the README states. The reference dequantizes
    with `ggml_blocks` (numpy, written from ggml's block layouts), not with the gguf-py code the
    loader calls; both give the same floats, bit for bit. Rows of 256 (the K-quants' block)."""
    from ggml_blocks import dequantize
    from gguf.constants import GGMLQuantizationType as Q

    cfg = hf_config(family)
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 256, 512, 64
    import transformers as tf

    torch.manual_seed(5)
    src = {"gemma3": tf.Gemma3ForCausalLM, "llama": tf.LlamaForCausalLM}[family](cfg).float().eval()
    with torch.no_grad():
        for p in src.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.05))
    qtypes = {"attn_q.weight": Q.Q4_K, "attn_k.weight": Q.Q4_K, "attn_v.weight": Q.Q6_K, "attn_output.weight": Q.Q5_0,
              "ffn_gate.weight": Q.Q4_K, "ffn_up.weight": Q.Q5_K, "ffn_down.weight": Q.Q6_K,
              "token_embd.weight": Q.Q8_0, "output.weight": Q.Q6_K}
    path = write_gguf(src, tmp_path / "q.gguf", qtypes=qtypes, attn_scale=family == "gemma3")
    from gguf import GGUFReader

    kinds = {t.tensor_type.name for t in GGUFReader(path).tensors}
    assert {"Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q8_0", "F32"} <= kinds
    ref_state = dequantized_state(path, src, dequantize=dequantize)
    by_gguf_py = dequantized_state(path, src)
    assert ref_state.keys() == by_gguf_py.keys()
    assert [k for k in ref_state if not np.array_equal(ref_state[k], by_gguf_py[k])] == []
    with torch.no_grad():
        for name, p in src.named_parameters():
            if name in ref_state:
                p.copy_(torch.from_numpy(ref_state[name]))
    tokens, mask = padded_batch(seed=2, left=True)
    diff = max_diff(jax_logits(load_model(path), tokens, mask), hf_logits(src, tokens, mask), mask)
    # the weights are equal bit for bit: what is left is float32 rounding in two forward passes
    # (gemma3 1.1e-5 on logits up to 5.2, llama 4e-7); the README states 2e-5
    assert diff <= 2e-5, f"{family}: max |diff| {diff}"


def test_gguf_gemma3_default_layer_pattern(tmp_path):
    """Without a pattern key, every 6th gemma3 layer is global (llama.cpp), as in HF's default."""
    import transformers as tf

    cfg = hf_config("gemma3")
    cfg.num_hidden_layers = 7
    cfg.layer_types = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(7)]
    torch.manual_seed(3)
    src = tf.Gemma3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for p in src.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.08))
    model = load_model(write_gguf(src, tmp_path / "g.gguf", window_pattern=False))
    assert model.config.layer_types == tuple(cfg.layer_types)
    assert model.config.query_pre_attn_scalar == 16  # head_dim: no scale key in the file
    tokens, mask = padded_batch(seed=4, lengths=(12, 7))
    # the source uses query_pre_attn_scalar=12; llama.cpp files carry no such key -> head_dim
    src.config.query_pre_attn_scalar = 16
    for layer in src.model.layers:
        layer.self_attn.scaling = 16 ** -0.5
    assert max_diff(jax_logits(model, tokens, mask), hf_logits(src, tokens, mask), mask) <= 1e-4


def test_gguf_sharded_on_mesh(tmp_path):
    src = hf_model("llama", seed=10)
    path = write_gguf(src, tmp_path / "l.gguf")
    mesh = make_mesh(data=4, tensor=2)
    model = load_model(path, mesh=mesh)
    assert len(model.layers[0].self_attn.q_proj.kernel[...].sharding.device_set) == 8
    tokens, mask = padded_batch(seed=11)
    assert max_diff(jax_logits(model, tokens, mask), hf_logits(src, tokens, mask), mask) <= 1e-4


def test_gguf_missing_tensor_is_named(tmp_path):
    path = write_gguf(hf_model("gemma3", seed=1), tmp_path / "g.gguf", drop="blk.2.post_ffw_norm.weight")
    with pytest.raises(KeyError, match=r"post_feedforward_layernorm"):
        load_model(path)


def test_gguf_unsupported_architecture_is_named(tmp_path):
    path = write_gguf(hf_model("qwen2", seed=1), tmp_path / "p.gguf", arch="phi3")
    with pytest.raises(GGUFError, match="phi3"):
        load_model(path)


@pytest.mark.parametrize(
    "rope",
    [
        dict(rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
             original_max_position_embeddings=8192),  # Llama 3.1
        dict(rope_theta=500000.0, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
             original_max_position_embeddings=8192),  # Llama 3.2
        dict(rope_theta=10000.0, factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
             original_max_position_embeddings=1024),
    ],
)
@pytest.mark.parametrize("head_dim", [16, 64, 128])
def test_llama3_rope_recovered_from_rope_freqs(rope, head_dim):
    from gguf_ref import llama3_rope_factors

    got = _llama3_rope(rope["rope_theta"], head_dim, llama3_rope_factors(rope, head_dim), "test")
    want = RopeConfig.from_hf(dict(rope, rope_type="llama3"))
    np.testing.assert_allclose(rope_inv_freq(got, head_dim), rope_inv_freq(want, head_dim), rtol=1e-5)
