"""The leaderboard on real chains: the arithmetic truth on hand-written chains, GSM8K's worked
solutions as reference traces, and `jaxcot leaderboard` end to end on a tiny model."""

import json
import os

import numpy as np
import pytest

from jaxcot.eval.leaderboard import DEFAULT_SCORERS, arithmetic_mask

# how SmolLM2's tokenizer splits these lines (a space before a number is a token of its own)
PIECES = ['N', 'atal', 'ia', ' sold', ' ', '4', '8', '/', '2', ' =', ' ', '2', '4', ' clips', ' in', ' May', '.',
          '\n', 'W', 'eng', ' earns', ' ', '1', '2', '/', '6', '0', ' =', ' $', '0', '.', '2', ' per', ' minute', '.',
          '\n', 'She', ' had', ' ', '1', ',', '0', '0', '0', ' +', ' ', '2', '.', '5', ' x', ' ', '3', '=', '1', ',',
          '0', '0', '7', '.', '5', ' and', ' ', '5', '0', ' boxes', ' x', ' more', '.', '\n']
ARITHMETIC = ['4', '8', '/', '2', ' =', '2', '4',
              '1', '2', '/', '6', '0', ' =', '0', '.', '2',
              '1', ',', '0', '0', '0', ' +', '2', '.', '5', ' x', '3', '=', '1', ',', '0', '0', '7', '.', '5']


def test_arithmetic_mask_marks_operands_operators_and_results():
    mask = arithmetic_mask(PIECES)
    assert mask.shape == (len(PIECES),) and mask.dtype == bool
    assert [p for p, k in zip(PIECES, mask) if k] == ARITHMETIC
    # a number alone ("50 boxes"), "$", the spaces and an "x" between words are not arithmetic
    for i in (PIECES.index(' $'), PIECES.index(' boxes') - 1, len(PIECES) - 4, PIECES.index(' ')):
        assert not mask[i], PIECES[i]
    assert not arithmetic_mask(['She', ' sold', ' 4', '8', ' clips', '.']).any()
    assert arithmetic_mask([]).shape == (0,)


GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
               "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 1,010"},
]


@pytest.fixture
def gsm8k_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    return str(path)


def test_reference_traces_drop_the_calculator_notes(gsm8k_file):
    from jaxcot.eval.leaderboard_cli import reference_traces
    from jaxcot.text.answers import split_answer

    traces = reference_traces("gsm8k", "train", 5, path=gsm8k_file)
    assert [t["gold"] for t in traces] == ["72", "1010"]
    t = traces[0]
    assert t["chain"] == ("Natalia sold 48/2 = 24 clips in May.\n"
                          "Natalia sold 48+24 = 72 clips altogether in April and May.\n")
    assert t["answer"] == "The answer is 72." and t["correct"] is True
    assert split_answer(t["chain"] + t["answer"]) == (t["chain"], t["answer"])  # jaxcot's answer boundary
    assert all("<<" not in t["chain"] and "####" not in t["chain"] for t in traces)
    assert [t["id"] for t in reference_traces("gsm8k", "train", 1, offset=1, path=gsm8k_file)] == [traces[1]["id"]]


def test_leaderboard_command_on_gsm8k_style_chains(tmp_path, gsm8k_file, tiny_model_folder):
    from jaxcot.cli import main
    from jaxcot.eval.leaderboard import arithmetic_truth
    from jaxcot.eval.leaderboard_cli import reference_traces
    from jaxcot.eval.metrics import mean_over_traces, roc_auc
    from jaxcot.importance.config import ScoreConfig
    from jaxcot.importance.score import score_traces
    from jaxcot.models import load_model, load_tokenizer

    out = tmp_path / "board"
    assert main(["leaderboard", "--model", tiny_model_folder, "--benchmark", "gsm8k", "--path", gsm8k_file,
                 "--samples", "2", "--layer", "0", "--layer", "2", "--out", str(out), "batch_size=2",
                 "options.integrated_gradients.steps=2"]) == 0
    board = json.load(open(out / "leaderboard.json"))
    assert board["truth"] == "arithmetic tokens" and board["benchmark"] == "gsm8k" and board["samples"] == 2
    got = {(r["layer"], r["scorer"]) for r in board["rows"]}
    layered = {"gogi", "grad_x_act", "integrated_gradients", "counterfactual"}
    assert got == {(layer, s) for s in DEFAULT_SCORERS for layer in ((0, 2) if s in layered else (None,))}
    assert os.path.getsize(out / "leaderboard_layers.png") > 1000 and (out / "leaderboard.md").exists()

    # the truth the command judged against: the chains' arithmetic, as the tiny model's tokenizer splits it
    traces = reference_traces("gsm8k", "train", 2, path=gsm8k_file)
    model, tok = load_model(tiny_model_folder), load_tokenizer(tiny_model_folder)
    scored = score_traces(model, tok, traces, ScoreConfig(scorers=["entropy"], layers=[0], batch_size=2),
                          progress=False)
    truth = [arithmetic_truth(r) for r in scored]
    marked = ["".join(p for p, k in zip(r["scores"]["pieces"], m) if k) for r, m in zip(scored, truth)]
    assert marked == [" 48/2 = 24 48+24 = 72", " 12/60 =0.2 0.2 x 50 =10"]
    entropy = next(r for r in board["rows"] if r["scorer"] == "entropy")
    want = mean_over_traces(roc_auc, [np.asarray(r["scores"]["entropy"]) for r in scored], truth)
    assert entropy["auc"] == pytest.approx(want)
