"""SFT input pipeline: chat-template tokenization, overflow rules, packing, per-process shards,
bad input naming file and line."""

import json

import numpy as np
import pytest
from train_helpers import write_examples

from jaxcot.data.sft import (
    BatchLayout,
    Example,
    batch_pipeline,
    fit_bucket,
    load_examples,
    materialize,
    plan_rows,
    run_buckets,
    tokenize_examples,
)
from jaxcot.data.wordtok import build_word_tokenizer
from jaxcot.io import DataError
from jaxcot.shapes import bucket_grid


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(["What is 12 + 7 ? 12 + 7 = 19 . The answer is 19 . Hello there you"])


def test_prompt_and_completion_split_by_chat_template(tok):
    exs, stats = tokenize_examples(tok, [("What is 12 + 7?", "12 + 7 = 19.")], max_len=64)
    ex = exs[0]
    prompt = tok.decode(ex.ids[: ex.n_prompt].tolist())
    completion = tok.decode(ex.ids[ex.n_prompt:].tolist())
    assert prompt == "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "12 + 7 = 19.<|im_end|>\n"
    assert stats.kept == 1 and stats.completion_tokens == ex.length - ex.n_prompt
    # chat messages as the prompt: same rendering as the plain user turn
    exs2, _ = tokenize_examples(tok, [([{"role": "user", "content": "What is 12 + 7?"}], "12 + 7 = 19.")], max_len=64)
    np.testing.assert_array_equal(exs2[0].ids, ex.ids)


def test_overflow_rules_are_counted(tok):
    pairs = [("Hello", "there"), ("Hello", " ".join(["you"] * 30)), (" ".join(["there"] * 40), "you")]
    exs, st = tokenize_examples(tok, pairs, max_len=20, overflow="drop")
    assert (len(exs), st.kept, st.dropped_too_long, st.truncated) == (1, 1, 2, 0)
    exs, st = tokenize_examples(tok, pairs, max_len=20, overflow="truncate")
    assert (st.kept, st.truncated, st.dropped_prompt_too_long) == (2, 1, 1)
    assert max(e.length for e in exs) == 20 and st.completion_tokens_cut > 0
    assert "dropped" in st.summary() and "truncated" in st.summary()
    with pytest.raises(ValueError, match="overflow"):
        tokenize_examples(tok, pairs, max_len=20, overflow="wrap")


def test_loss_mask_marks_only_completion_tokens(tok):
    exs, _ = tokenize_examples(tok, [("Hello", "there you"), ("What is 12 + 7?", "19")], max_len=64)
    b = materialize(exs, [[(0, 1)]], 48, pad_id=0)  # both packed into one row
    n0, n1 = exs[0].length, exs[1].length
    lm, seg, pos = b["loss_mask"][0, 0], b["segments"][0, 0], b["positions"][0, 0]
    assert lm.sum() == (n0 - exs[0].n_prompt) + (n1 - exs[1].n_prompt)
    assert not lm[: exs[0].n_prompt].any() and lm[exs[0].n_prompt:n0].all()
    assert not lm[n0:n0 + exs[1].n_prompt].any() and lm[n0 + exs[1].n_prompt:n0 + n1].all()
    assert (seg[:n0] == 1).all() and (seg[n0:n0 + n1] == 2).all() and (seg[n0 + n1:] == 0).all()
    assert pos[n0] == 0 and pos[n0 + n1 - 1] == n1 - 1
    assert not b["mask"][0, 0, n0 + n1:].any()


def test_packing_plan_and_shuffle():
    lengths = [5, 9, 3, 7, 12, 4, 8, 6, 2, 10]
    rows = plan_rows(lengths, epochs=2, seed=1, max_len=16, packing=True)
    assert all(sum(lengths[i] for i in r) <= 16 for r in rows)
    flat = [i for r in rows for i in r]
    assert sorted(flat) == sorted(list(range(10)) * 2)
    plain = plan_rows(lengths, epochs=2, seed=1, max_len=16, packing=False)
    order0, order1 = [r[0] for r in plain[:10]], [r[0] for r in plain[10:]]
    assert sorted(order0) == list(range(10)) and order0 != order1 and order0 != list(range(10))
    assert plain == plan_rows(lengths, epochs=2, seed=1, max_len=16, packing=False)
    assert plain != plan_rows(lengths, epochs=2, seed=2, max_len=16, packing=False)


def test_process_shards_cover_the_global_batch(tok):
    pairs = [("Hello", "there " * (i % 5 + 1)) for i in range(16)]
    exs, _ = tokenize_examples(tok, pairs, max_len=32)
    rows = plan_rows([e.length for e in exs], epochs=1, seed=0, max_len=32, packing=False)
    full = batch_pipeline(exs, rows, BatchLayout(8, 2, 0, 1), buckets=(16, 32), pad_id=0)
    parts = [batch_pipeline(exs, rows, BatchLayout(8, 2, p, 2), buckets=(16, 32), pad_id=0) for p in range(2)]
    assert len(full) == 2
    for k in range(len(full)):
        whole = full[k]
        assert whole["tokens"].shape[:2] == (2, 4)
        for key, arr in whole.items():
            joined = np.concatenate([parts[0][k][key], parts[1][k][key]], axis=1)
            np.testing.assert_array_equal(joined, arr)


def test_run_buckets_pad_less_at_the_same_program_count():
    """The first n batches' lengths: no more distinct ones than the plain grid gives them, never
    more padding, max_len kept for the batches after them; the benchmark's 8 GSM8K batches of 4
    (longest rows as below) go from 1.20x to 1.11x padding at 3 programs."""
    def case(longest, batch=4, max_len=512, steps=2, n=None):
        exs = [Example(np.zeros(m, np.int32), 1) for m in longest for _ in range(batch)]
        rows = [(i,) for i in range(len(exs))]
        return run_buckets(exs, rows, batch, len(longest) if n is None else n, max_len=max_len, steps=steps)

    gsm8k = [178, 229, 377, 230, 294, 202, 276, 289]
    fitted = case(gsm8k)
    assert fitted == (240, 320, 384, 512)
    grid = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    assert run_buckets([], [], 4, 8, max_len=512, steps=2, fit=False) == grid
    assert sum(fit_bucket(n, fitted) for n in gsm8k) == 2304 < sum(fit_bucket(n, grid) for n in gsm8k) == 2496
    rng = np.random.default_rng(0)
    for _ in range(25):
        longest = [int(x) for x in rng.integers(5, 1000, rng.integers(1, 30))]
        steps = int(rng.choice([1, 2, 4]))
        got = case(longest, max_len=1000, steps=steps, n=max(1, len(longest) - 2))
        plain = bucket_grid(1000, steps=steps)
        head = longest[:max(1, len(longest) - 2)]
        assert 1000 in got
        assert len({fit_bucket(m, got) for m in head}) <= len({fit_bucket(m, plain) for m in head})
        assert sum(fit_bucket(m, got) for m in head) <= sum(fit_bucket(m, plain) for m in head)
        assert all(fit_bucket(m, got) >= m for m in longest)


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_examples(tmp_path / "d.jsonl", 3)
    lines = open(path).read().splitlines()
    lines.insert(2, '{"prompt": "x", "completion": ')
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:3: malformed JSON"):
        load_examples(path)


def test_missing_completion_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: record has no field 'completion'"):
        load_examples(path)
    path.write_text(json.dumps({"prompt": 3, "completion": "b"}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'prompt' must be"):
        load_examples(path)


def test_datasets_source(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"q": "What is 1 + 1?", "a": "2"}, {"q": "Hello", "a": "there"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    got = load_examples(tmp_path / "ds", source="datasets", prompt_field="q", completion_field="a")
    assert got == [("What is 1 + 1?", "2"), ("Hello", "there")]
    with pytest.raises(DataError, match="no column 'completion'"):
        load_examples(tmp_path / "ds", source="datasets", prompt_field="q")
