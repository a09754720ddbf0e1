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


def test_the_command_refuses_in_one_line_or_truncates_when_asked(tmp_path, capsys):
    """Issue 30's probes through `jaxcot generate` on a 1,024-position model: a 1,501-token prompt,
    `--max-new-tokens 1e9` (and 10^9 written out) and a 5 MB question are each refused in one line,
    before any program compiles and with nothing written; `overflow=truncate` generates instead."""
    import json
    import os
    import re

    from jaxcot.cli import main
    from jaxcot.models import save_hf
    from jaxcot.testbed.tokenizer import build_testbed_tokenizer
    from jaxcot.text.prompts import PromptConfig, prompt_ids

    tok = build_testbed_tokenizer(sample=50)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16, tie_word_embeddings=True,
                      max_position_embeddings=1024, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = save_hf(init_model(cfg, 0), tmp_path / "model", tokenizer=tok)
    question = "What is 3 plus 4?" + " 7" * 1464
    assert len(prompt_ids(tok, question, PromptConfig())) == 1501
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "a", "question": question}) + "\n")
    (tmp_path / "big.jsonl").write_text(json.dumps({"id": "b", "question": "What is 3 plus 4? " * 280_000}) + "\n")
    assert os.path.getsize(tmp_path / "big.jsonl") > 5_000_000
    progress = re.compile(r"^\d\d:\d\d:\d\d \[jaxcot\.\w+ p\d+\] ")

    def refused(argv, pattern):
        before = sorted(os.listdir(tmp_path))
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: a flag's value of the wrong type
            code = e.code
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and not progress.match(x)]
        assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
        assert "Traceback" not in err[0] and "RESOURCE_EXHAUSTED" not in err[0]
        assert sorted(os.listdir(tmp_path)) == before  # no output, meta, partial or lock

    gen = ["generate", f"--model={model}", f"--data={tmp_path}/q.jsonl", f"--out={tmp_path}/o.jsonl"]
    refused(gen + ["--max-new-tokens=4"], r"prompt 0 has 1501 tokens: .*context of 1024 positions.*overflow=truncate")
    refused(gen + ["--max-new-tokens", "1000000000"], r"max_new_tokens 1000000000 fills the model's context of 1024")
    refused(gen + ["--max-new-tokens", "1e9"], r"--max-new-tokens: invalid int value: '1e9'")
    refused(gen + ["max_new_tokens=1e9"], r"max_new_tokens: expected int, got '1e9'")
    refused(["generate", f"--model={model}", f"--data={tmp_path}/big.jsonl", f"--out={tmp_path}/b.jsonl",
             "--max-new-tokens=4"], r"prompt 0 has \d{7} tokens: .*context of 1024 positions")
    assert main([*gen, "--max-new-tokens=4", "overflow=truncate"]) == 0
    assert "1 of 1 prompts lost their first tokens" in capsys.readouterr().err
    assert len(open(tmp_path / "o.jsonl").read().splitlines()) == 1
