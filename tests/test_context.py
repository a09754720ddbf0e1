"""Prompts, chains and training rows are checked against the model's context, and a decode that
cannot fit memory is refused before anything compiles."""

import numpy as np
import pytest

from jaxcot.generate import Generator
from jaxcot.generate.api import fit_context
from jaxcot.models import ModelConfig, init_model


def _model(context=64):
    cfg = ModelConfig(family="llama", vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=context)
    return init_model(cfg, 0)


def test_fit_context_refuses_or_keeps_the_end():
    prompts = [[1, 2, 3], list(range(1, 41))]
    with pytest.raises(ValueError, match=r"prompt 1 has 40 tokens: with max_new_tokens 30 it does not fit the "
                                         r"model's context of 64 positions \(1 prompts too long\)"):
        fit_context(prompts, 30, 64)
    kept, cut = fit_context(prompts, 30, 64, "truncate")
    assert cut == 1 and kept[0] == [1, 2, 3] and list(kept[1]) == list(range(7, 41))  # its last 34 tokens
    with pytest.raises(ValueError, match="max_new_tokens 64 fills the model's context of 64 positions"):
        fit_context(prompts, 64, 64, "truncate")


def test_generator_refuses_a_prompt_past_the_context_and_truncates_when_asked():
    gen = Generator(_model(), eos_ids=[0])
    with pytest.raises(ValueError, match="does not fit the model's context of 64 positions"):
        gen.generate_ids([list(range(1, 50))], max_new_tokens=20)
    with pytest.raises(ValueError, match="max_new_tokens 1000000000 fills the model's context"):
        gen.generate_ids([[1, 2]], max_new_tokens=10**9)
    (c,) = gen.generate_ids([list(range(1, 50))], max_new_tokens=20, overflow="truncate")
    (same,) = gen.generate_ids([list(range(6, 50))], max_new_tokens=20)  # what truncation kept: the last 44
    assert c.token_ids == same.token_ids


def test_a_decode_that_cannot_fit_memory_is_refused_before_compiling(monkeypatch):
    from jaxcot.generate import sampler

    gen = Generator(_model(context=1 << 20), eos_ids=[0])
    need = gen.sampler.decode_bytes(8, 16, 1000)
    monkeypatch.setattr(sampler, "device_memory_bytes", lambda device: need // 2)
    compiled = len(gen.sampler._programs)
    with pytest.raises(ValueError, match=r"decoding 8 rows of 16 prompt \+ 1000 new tokens needs at least .* GiB, "
                                         r"more than the .* GiB of host memory: lower the batch size"):
        gen.generate_ids([[1, 2, 3]] * 8, max_new_tokens=1000)
    assert len(gen.sampler._programs) == compiled  # refused before compiling
    monkeypatch.setattr(sampler, "device_memory_bytes", lambda device: None)  # unknown: no refusal
    assert gen.sampler.decode_bytes(8, 16, 2000) > need  # the bound grows with the budget
    assert np.isfinite(need)


def test_a_trace_longer_than_the_context_is_named(tmp_path):
    from jaxcot.importance.score import score_traces
    from jaxcot.io import DataError
    from jaxcot.testbed.tokenizer import build_testbed_tokenizer

    tok = build_testbed_tokenizer(sample=20)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=32)
    rec = {"id": "long", "question": "What is 3 plus 4?", "chain": " 3 + 4 = 7 ." * 12, "answer": " The answer is 7."}
    with pytest.raises(DataError, match=r"records\[long\]: the trace has \d+ tokens, more than the model's context "
                                        r"of 32 positions"):
        score_traces(init_model(cfg, 0), tok, [rec], progress=False)
