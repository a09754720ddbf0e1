"""Training-set builders and `jaxcot compress` end to end on a synthetic scored file."""

import argparse
import collections
import json
import os

import numpy as np
import pytest
from scored_fixtures import scored_records

from jaxcot.compress import builders, cli, compress_records


def test_tokenskip_prompt_format():
    assert builders.tokenskip_prompt("What is 2+3?", 0.5) == "What is 2+3?<|im_end|>0.5<|im_end|>"
    assert builders.tokenskip_prompt("Q", 0.7, eot="<|eot_id|>") == "Q<|eot_id|>0.7<|eot_id|>"
    assert builders.tokenskip_prompt("Q", 1.0) == "Q"
    want = "Q <|im_end|> 0.6 <|im_end|>"
    assert builders.tokenskip_prompt("Q", 0.6, template="{question} {eot} {gamma} {eot}") == want


def test_tokenskip_examples_through_compress_records():
    recs = scored_records(60, seed=1)
    out = compress_records(recs, "tokenskip", builder={"eot": "<E>"})
    for rec, ex in zip(recs, out.examples):
        if ex["gamma"] == 1.0:
            assert ex["prompt"] == rec["question"]
            assert ex["completion"] == rec["chain"] + rec["answer"] and ex["kept"] == ex["total"]
        else:
            assert ex["prompt"] == f"{rec['question']}<E>{ex['gamma']:g}<E>"
            assert ex["kept"] < ex["total"]
        assert set(ex) == {"id", "prompt", "completion", "method", "gamma", "kept", "total"}
    # a fixed gamma overrides the draw
    fixed = compress_records(recs, "tokenskip", gamma=0.7)
    assert {ex["gamma"] for ex in fixed.examples} == {0.7}


def test_gamma_draws_uniform_deterministic_order_free():
    ids = [f"q{i}" for i in range(6000)]
    draws = [builders.draw_gamma(i, seed=3) for i in ids]
    counts = collections.Counter(draws)
    assert set(counts) == set(builders.DEFAULT_GAMMAS)
    expected = len(ids) / 6
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 20.5  # p = 0.001 at 5 degrees of freedom
    assert [builders.draw_gamma(i, seed=3) for i in reversed(ids)] == draws[::-1]
    other = [builders.draw_gamma(i, seed=4) for i in ids]
    assert np.mean(np.array(other) != np.array(draws)) > 0.7
    assert {builders.draw_gamma(i, gammas=(0.5, 0.9)) for i in ids[:200]} == {0.5, 0.9}


def test_only_correct_filter_and_grader():
    recs = [
        {"id": "a", "answer": "The answer is 1,200.", "gold": "1200"},
        {"id": "b", "answer": "The answer is 7.", "gold": "8"},
        {"id": "c", "answer": "The answer is 7.", "gold": "8", "correct": True},  # the field wins
        {"id": "d", "answer": "The answer is 5.", "correct": False},
        {"id": "e", "answer": "The answer is 5."},  # unverifiable
        {"id": "f", "answer": "The answer is blue.", "gold": "Blue"},
    ]
    kept, counts = builders.select_correct(recs)
    assert [r["id"] for r in kept] == ["a", "c", "f"]
    assert counts == {"incorrect": 2, "unverified": 1, "unverified_kept": 0}
    kept, counts = builders.select_correct(recs, unverified="keep")
    assert [r["id"] for r in kept] == ["a", "c", "e", "f"] and counts["unverified_kept"] == 1
    kept, _ = builders.select_correct(recs, grader=lambda a, g: True)
    assert [r["id"] for r in kept] == ["a", "b", "c", "f"]


def test_only_correct_in_compress_records_and_pluggable_grader():
    recs = scored_records(20, seed=2)
    for i, r in enumerate(recs):
        r["gold"] = "5" if i % 4 else "6"
    out = compress_records(recs, "gogi-static")
    assert out.summary["filtered"]["incorrect"] == 5 and len(out.examples) == 15
    out = compress_records(recs, "gogi-static", grader=lambda a, g: g == "6")
    assert [e["id"] for e in out.examples] == [r["id"] for i, r in enumerate(recs) if i % 4 == 0]
    out = compress_records(recs, "gogi-static", filter={"only_correct": False})
    assert len(out.examples) == 20


def test_length_filter_counts():
    exs = [{"id": str(i), "prompt": "p" * i, "completion": "c", "kept": i, "total": 2 * i} for i in range(10)]
    kept, counts = builders.length_filter(exs, max_chain_tokens=6)
    assert len(kept) == 7 and counts["too_long_chain"] == 3
    kept, counts = builders.length_filter(exs, max_tokens=4, count_tokens=lambda e: len(e["prompt"]) + 1)
    assert [e["id"] for e in kept] == ["0", "1", "2", "3"] and counts["too_long"] == 6 and counts["max_seen"] == 10
    with pytest.raises(ValueError, match="count_tokens"):
        builders.length_filter(exs, max_tokens=4)
    recs = scored_records(12, seed=3)
    out = compress_records(recs, "gogi-ads", filter={"max_tokens": 30}, count_tokens=lambda e: e["kept"])
    n_long = sum(d.kept > 30 for d in out.details)
    assert 0 < n_long < 12
    assert out.summary["filtered"]["too_long"] == n_long and len(out.examples) == 12 - n_long
    assert out.summary["written"] == 12 - n_long and out.summary["compressed"] == 12


def test_length_filter_with_a_tokenizer_folder(tmp_path):
    from jaxcot.data.wordtok import build_word_tokenizer

    recs = scored_records(8, seed=4)
    tok = build_word_tokenizer([r["question"] + r["chain"] + r["answer"] for r in recs])
    tok.save_pretrained(tmp_path / "tok")
    count = builders.tokenizer_counter(tok)
    out = compress_records(recs, "gogi-static", builder={"prompt_style": "chat", "system": "Be brief."})
    lengths = [count(e) for e in out.examples]
    limit = int(np.median(lengths))
    out2 = compress_records(recs, "gogi-static", builder={"prompt_style": "chat", "system": "Be brief."},
                            filter={"max_tokens": limit, "tokenizer": str(tmp_path / "tok")})
    assert out2.summary["filtered"]["too_long"] == sum(n > limit for n in lengths) > 0
    assert out.examples[0]["prompt"] == [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": recs[0]["question"]}]


def test_default_grader_is_gsm8k_with_words_for_non_numbers():
    from jaxcot.text.grading import get_grader

    g = get_grader(None)
    assert g("The answer is 15.", "15") and g("$1,500.00", "1500") and g("x = -3", "-3.0")
    assert not g("The answer is 15.", "16") and not g("12 apples, 3 pears", "12")
    assert g("Blue.", " blue") and not g("red", "blue") and g("The answer is light blue.", "blue")


# ---------------------------------------------------------------- CLI


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="jaxcot")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def write_scored(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


@pytest.mark.parametrize("method", ["gogi-ads", "gogi-static", "tokenskip", "selfinfo-ads", "random", "step-entropy"])
def test_cli_end_to_end(tmp_path, capsys, method):
    recs = scored_records(16, seed=5)
    recs[3]["gold"] = "4"  # one wrong trace
    scored = tmp_path / "scored.jsonl"
    write_scored(scored, recs)
    out = tmp_path / "sets" / f"{method}.jsonl"
    assert run_cli(["compress", "--scored", str(scored), "--method", method, "--out", str(out),
                    "--kappa", "0.6", "ads.beta=0.1", "ads.n_max=5"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "sets" / f"{method}.summary.json").read_text())
    assert len(lines) == 15 and "r3" not in {e["id"] for e in lines}
    assert summary["filtered"]["incorrect"] == 1 and summary["written"] == 15
    config = summary["config"]
    assert config["ads"]["beta"] == 0.1 and config["ads"]["n_max"] == 5 and config["step"]["kappa"] == 0.6
    assert summary["tokens_before"]["total"] == sum(len(r["scores"]["pieces"]) for r in recs if r["id"] != "r3")
    assert summary["tokens_after"]["total"] == sum(e["kept"] for e in lines)
    assert 0 < summary["retained_ratio"]["mean"] < 1
    dropped = summary["dropped_kinds"]
    n_dropped = summary["tokens_before"]["total"] - summary["tokens_after"]["total"]
    assert sum(v["dropped"] for v in dropped.values()) == n_dropped
    for e, r in zip(lines, [r for r in recs if r["id"] != "r3"]):
        assert e["completion"].endswith(r["answer"]) and e["method"] == method
    printed = capsys.readouterr().out
    assert "retained ratio: mean" in printed and "digits" in printed and "words" in printed
    # the set, its summary, and the record of what made it (jaxcot.provenance)
    assert sorted(os.listdir(tmp_path / "sets")) == sorted([f"{method}.jsonl", f"{method}.summary.json",
                                                             f"{method}.jsonl.meta.json"])


def test_cli_default_paths_gamma_flag_and_bad_line(tmp_path, capsys):
    recs = scored_records(5, seed=6)
    scored = tmp_path / "scored.jsonl"
    write_scored(scored, recs)
    run_cli(["compress", "--scored", str(scored), "--method", "gogi-static", "--gamma", "0.5"])
    lines = (tmp_path / "scored.gogi-static.jsonl").read_text().splitlines()
    assert {json.loads(x)["gamma"] for x in lines} == {0.5}
    assert (tmp_path / "scored.gogi-static.summary.json").exists()
    recs[2]["scores"]["pieces"] = recs[2]["scores"]["pieces"][:-1]
    write_scored(scored, recs)
    with pytest.raises(ValueError, match=r"scored.jsonl:3: scores.pieces do not join to the chain text"):
        run_cli(["compress", "--scored", str(scored), "--method", "gogi-ads"])


def test_cli_registered_in_jaxcot_cli():
    from jaxcot.cli import COMMANDS

    assert COMMANDS["compress"][0] == "jaxcot.compress.cli"


def test_unusable_records_are_left_out_counted_and_told(tmp_path, capsys):
    """A truncated record and one without an answer are left out, counted in the summary and
    told; a file with nothing left to compress is one error naming it."""
    from jaxcot.io import DataError

    recs = scored_records(6, seed=7)
    recs[1]["finish_reason"] = "length"
    recs[4]["answer"] = ""
    out = compress_records(recs, "gogi-static")
    assert [e["id"] for e in out.examples] == ["r0", "r2", "r3", "r5"]
    assert out.summary["filtered"]["truncated"] == 1 and out.summary["filtered"]["no_answer"] == 1
    scored = tmp_path / "scored.jsonl"
    write_scored(scored, recs)
    assert run_cli(["compress", "--scored", str(scored), "--method", "gogi-static"]) == 0
    assert "truncated 1, no_answer 1" in capsys.readouterr().out  # the summary table's filtered line
    write_scored(scored, [recs[1], recs[4]])
    with pytest.raises(DataError, match=rf"^{scored}: no record to compress \(left out 2 of 2 records: 1 truncated, "
                                        r"1 no_answer\)$"):
        run_cli(["compress", "--scored", str(scored), "--method", "gogi-static", "--overwrite"])
