"""Trace encoding (exact pieces, boundary rule), bucketed batches, score_traces and `jaxcot score`."""

import json

import numpy as np
import pytest

from jaxcot.data.wordtok import CHATML_TEMPLATE, build_word_tokenizer
from jaxcot.importance.batching import plan_batches
from jaxcot.importance.encode import encode_trace
from jaxcot.shapes import bucket_grid, bucket_length
from jaxcot.text.answers import value_span

CORPUS = [
    "Tom has 3 apples and buys 12 more .", "How many apples now ?", "3 + 12 = 15 , so 15 apples .",
    "The answer is 15 .", "Wait , let me check : 12 + 3 = 15 .\n\nYes .", "answer",
]


def bpe_tokenizer():
    """A tiny byte-level BPE tokenizer (GPT-2 style offsets) with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(CORPUS * 20 + ["theanswer", "é😀"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def word_tok():
    return build_word_tokenizer(CORPUS + ["Solve the problem step by step . Finish with a final line of the form "
                                          "\" The answer is N . \""])


@pytest.mark.parametrize("make", ["word", "bpe"])
@pytest.mark.parametrize("chain,answer,sep", [
    ("3 + 12 = 15 , so 15 apples .\n\n", "The answer is 15 .", ""),
    ("  Wait , let me check : 12 + 3 = 15 .", "The answer is 15 .", "\n"),
    ("so the", "answer is 15 .", ""),
    ("the é😀 apples", " The answer is 15 .", ""),
])
def test_pieces_spell_the_chain(make, chain, answer, sep, word_tok):
    tok = word_tok if make == "word" else bpe_tokenizer()
    enc = encode_trace(tok, "How many apples now ?", chain, answer, sep=sep)
    assert "".join(enc.pieces) == chain
    assert len(enc.pieces) == enc.chain.stop - enc.chain.start > 0
    assert enc.chain.stop <= enc.answer.start < enc.answer.stop == enc.length
    if make == "bpe":  # lossless tokenizer: the ids are the text (the word one maps OOV to <unk>)
        assert tok.decode(enc.token_ids[enc.chain.start:].tolist()) == chain + sep + answer
    cm, am = enc.masks()
    assert cm.sum() == len(enc.pieces) and not (cm & am).any()


def test_straddling_token_belongs_to_the_chain():
    tok = bpe_tokenizer()
    chain, answer = "3 apples . theans", "wer is 15 ."
    ids = tok("3 apples . theanswer is 15 .", add_special_tokens=False)["input_ids"]
    assert "answer" in [tok.decode([i]).strip() for i in ids] or "theanswer" in [tok.decode([i]).strip() for i in ids]
    enc = encode_trace(tok, "q ?", chain, answer)
    assert "".join(enc.pieces) == chain
    last = tok.decode(enc.token_ids[enc.chain.stop - 1:enc.chain.stop].tolist())
    assert last.endswith("answer") and enc.pieces[-1] in ("ans", "theans", " theans")
    assert tok.decode(enc.token_ids[enc.answer].tolist()) == " is 15 ."


def test_bad_traces_are_named(word_tok):
    with pytest.raises(ValueError, match="rec7.*empty answer"):
        encode_trace(word_tok, "q", "chain", "", where="rec7")


@pytest.mark.parametrize("answer,gold,value", [
    ("The answer is 15.", "15", "15"),
    ("The answer is 115.", "15", "115"),  # gold not found whole: the last number
    ("The answer is 1,500 dollars.", None, "1,500"),
    ("So 3 + 12 = 15 and the answer is 15", "15", "15"),
    (r"Thus $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", r"\frac{1}{2}"),
    (r"Thus $\boxed{x^{2}+1}$.", None, "x^{2}+1"),
    ("#### 72", "72", "72"),
])
def test_value_span(answer, gold, value):
    a, b = value_span(answer, gold)
    assert answer[a:b] == value
    if gold and value == gold:
        assert b == answer.rfind(gold) + len(gold)


@pytest.mark.parametrize("make", ["word", "bpe"])
def test_value_goal_narrows_the_answer_span(make, word_tok):
    tok = word_tok if make == "word" else bpe_tokenizer()
    chain, answer = "3 + 12 = 15 , so 15 apples .\n\n", "The answer is 15 ."
    full = encode_trace(tok, "How many apples now ?", chain, answer)
    value = encode_trace(tok, "How many apples now ?", chain, answer, goal="value", gold="15")
    assert value.chain == full.chain and value.pieces == full.pieces
    assert full.answer.start < value.answer.start and value.answer.stop < full.answer.stop
    assert tok.decode(value.token_ids[value.answer].tolist()).strip() == "15"
    with pytest.raises(ValueError, match="rec9.*holds no value"):
        encode_trace(tok, "q", chain, "The answer is none .", goal="value", where="rec9")
    with pytest.raises(ValueError, match="goal must be one of"):
        encode_trace(tok, "q", chain, answer, goal="everything")


def test_buckets_and_plan():
    assert [bucket_length(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert [bucket_length(n, steps=4) for n in (1, 16, 17, 20, 21, 100, 257)] == [16, 16, 20, 20, 24, 112, 320]
    assert [bucket_length(n, minimum=1, steps=2) for n in (1, 2, 3, 5, 13)] == [1, 2, 3, 6, 16]
    assert bucket_grid(100, steps=2) == (16, 24, 32, 48, 64, 96, 100)
    with pytest.raises(ValueError, match="power of two"):
        bucket_length(10, steps=3)
    lengths = [5, 40, 20, 18, 100, 7, 300, 260]
    plan = plan_batches(lengths, batch_size=3, dp=2)  # rows of 4, longest first, neighbours together
    assert [i for _, i in plan] == [[6, 7, 4, 1], [2, 3, 5, 0]]
    assert [n for n, _ in plan] == [320, 20]  # the grid length (4 per octave) of each batch's longest
    assert plan_batches(lengths, batch_size=4, steps=1)[0][0] == 512


def _traces(n):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a, b = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        chain = f"Tom has {a} apples and buys {b} more .\n\n{a} + {b} = {a + b} . " * int(rng.integers(1, 4))
        out.append({"id": f"t{i}", "question": "How many apples now ?", "chain": chain,
                    "answer": f"The answer is {a + b} .", "correct": i != 2})
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, word_tok):
    from jaxcot.models import ModelConfig, init_model, save_hf

    cfg = ModelConfig(family="llama", vocab_size=len(word_tok), hidden_size=32, intermediate_size=64, num_layers=3,
                      num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("model")
    save_hf(init_model(cfg, seed=1), path, tokenizer=word_tok)
    return str(path)


def test_score_traces_is_batch_invariant(model_dir):
    from jaxcot.importance.score import ScoreConfig, score_traces
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.sharding import make_mesh

    tok = load_tokenizer(model_dir)
    traces = _traces(5)
    alone = score_traces(load_model(model_dir), tok, traces[:1], ScoreConfig(batch_size=1), progress=False)
    many = score_traces(load_model(model_dir, mesh=make_mesh()), tok, traces, ScoreConfig(batch_size=3),
                        progress=False)
    assert [r["id"] for r in many] == [t["id"] for t in traces]
    a, m = alone[0]["scores"], many[0]["scores"]
    assert m["layer"] == 2 and m["norm"] == "l1" and "".join(m["pieces"]) == traces[0]["chain"]
    assert m["vocab_size"] == len(tok)
    for key in ("gogi", "entropy", "self_info"):
        np.testing.assert_allclose(m[key], a[key], rtol=2e-5, atol=1e-6)
        assert len(m[key]) == len(m["token_ids"]) == len(m["pieces"])
    assert min(m["gogi"]) > 0 and min(m["entropy"][1:]) > 0


def test_fsdp_mesh_and_remat_give_the_same_scores(model_dir):
    """ScoreConfig.mesh with fsdp shards the weights (what a 7B model on 16 GiB devices needs),
    remat recomputes the blocks: the same scores, and the same fingerprint (they are layout only)."""
    import jax

    from jaxcot.config import MeshConfig
    from jaxcot.importance.score import ScoreConfig, score_traces, scores_fingerprint
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.sharding import config_mesh

    tok, traces = load_tokenizer(model_dir), _traces(5)
    plain_cfg = ScoreConfig(batch_size=4)
    fsdp_cfg = ScoreConfig(batch_size=4, mesh=MeshConfig(data=2, fsdp=4), remat=True)
    model = load_model(model_dir, mesh=config_mesh(fsdp_cfg.mesh))
    kernel = model.layers[0].mlp.gate_proj.kernel[...]
    assert kernel.sharding.mesh.shape["fsdp"] == 4 and "fsdp" in str(kernel.sharding.spec)
    assert kernel.addressable_shards[0].data.shape[0] == kernel.shape[0] // 4  # each device holds a quarter
    plain = score_traces(load_model(model_dir, mesh=config_mesh(plain_cfg.mesh)), tok, traces, plain_cfg,
                         progress=False)
    sharded = score_traces(model, tok, traces, fsdp_cfg, progress=False)
    assert len(jax.devices()) == 8
    for a, b in zip(plain, sharded):
        for key in ("gogi", "entropy", "self_info"):
            np.testing.assert_allclose(b["scores"][key], a["scores"][key], rtol=2e-5, atol=1e-6)
    assert scores_fingerprint(traces, fsdp_cfg) == scores_fingerprint(traces, plain_cfg)
    assert scores_fingerprint(traces, ScoreConfig(batch_size=4, norm="l2")) != scores_fingerprint(traces, plain_cfg)


def test_cli_scores_resumably_and_probes(model_dir, tmp_path, capsys):
    from jaxcot.cli import main

    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(t) + "\n" for t in _traces(4)))
    out = tmp_path / "scored.jsonl"
    # An interrupted run left t0 (with a marker) and a torn line: t0 is kept, the rest redone.
    from jaxcot.importance.score import ScoreConfig, scores_fingerprint
    from jaxcot.models.loading import model_inputs
    from jaxcot.provenance import claim

    same = ScoreConfig(layers=[1, 3], norm="l2", batch_size=2)
    claim(out, scores_fingerprint(_traces(4), same, inputs=model_inputs(model_dir)))  # its record of what made it
    (tmp_path / "scored.jsonl.partial").write_text(json.dumps({"id": "t0", "marker": 1}) + "\n{\"id\": \"t1\", ")
    args = ["score", "--model", model_dir, "--traces", str(traces), "--out", str(out),
            "--batch-size", "2", "--layer", "1", "--layer", "3", "--norm", "l2"]
    assert main(args) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["t0", "t1", "t3"]  # t2 is incorrect
    assert next(r for r in recs if r["id"] == "t0") == {"id": "t0", "marker": 1}
    s = next(r for r in recs if r["id"] == "t1")["scores"]
    assert s["layer"] == [1, 3] and s["norm"] == "l2"
    assert main(args) == 0 and "is complete (3 records)" in capsys.readouterr().err  # nothing left to do
    assert main(["score", "--model", model_dir, "--traces", str(traces), "--probe", "3"]) == 0
    table = capsys.readouterr().out
    assert "num_share" in table and len([row for row in table.splitlines() if row.strip()[:1].isdigit()]) == 4
    assert " 2*" in table


def test_unusable_traces_are_skipped_counted_and_told(model_dir, tmp_path, capsys):
    """`jaxcot score` leaves out a truncated trace, one without an answer and (by default) an
    incorrect one, says how many of each, and scores the rest; a file with none left is one error
    naming it."""
    from jaxcot.cli import main
    from jaxcot.importance.score import ScoreConfig, select_traces

    traces = _traces(5)  # t2 is marked incorrect
    traces[0]["finish_reason"] = "length"  # hit the token limit: its chain was cut off
    traces[3]["answer"] = ""  # no final answer: nothing for GoGI to differentiate
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in traces))
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", model_dir, "--traces", str(path), "--out", str(out), "--batch-size", "2"]) == 0
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == ["t1", "t4"]
    assert "left out 3 of 5 traces: 1 truncated, 1 incorrect, 1 no_answer" in capsys.readouterr().err
    picked, skipped = select_traces(traces, ScoreConfig(only_correct=False))
    assert [t["id"] for t in picked] == ["t1", "t2", "t4"] and skipped == {"truncated": 1, "no_answer": 1}
    value = ScoreConfig(goal="value")
    assert value.skip_reason(dict(traces[1], answer="The answer is none .")) == "no_value"

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(dict(t, finish_reason="length")) + "\n" for t in traces[:2]))
    assert main(["score", "--model", model_dir, "--traces", str(bad), "--out", str(tmp_path / "x.jsonl")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and f"{bad}: no trace to score (left out 2 of 2 traces: 2 truncated)" in errors[0]
