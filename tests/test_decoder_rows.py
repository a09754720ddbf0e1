"""Decode-time compression as rows of a run's table: `eval.decoders` (`DecoderRow`) adds
`<method>+<decoder>`, the method's student decoding with the continuous engine, beside the SFT
students in the eval results, results.json, report.md and report.html."""

import json
import os
import re

import pytest

from jaxcot.config import ConfigError, load_config
from jaxcot.eval.report import PEAK_KV, MethodResult, markdown_table, model_table
from jaxcot.eval.students import DecoderRow, EvalConfig
from jaxcot.generate.config import EngineConfig, EvictionConfig
from jaxcot.run import RunConfig, run_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVICT = "{continuous: true, slots: 4, eviction: {budget: 6, window: 2, scorer: recency}}"


def test_decoders_parse_from_yaml_and_key_value():
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "demo-decode.yaml"))
    demo = load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"))
    import dataclasses

    # the demo's every setting (its stages are reused), plus the decoder rows
    assert dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, decoders=[])) == demo
    assert [n for n, _, _ in cfg.decoder_rows()] == [
        "original+early-exit", "gogi-skip+early-exit", "original+evict-50", "gogi-skip+evict-50",
        "original+evict-25", "gogi-skip+evict-25"]
    early = cfg.eval.decoders[0].engine
    assert early.continuous and early.early_exit.enabled and early.early_exit.boundary == ["\n\n"]
    assert (early.early_exit.threshold, early.early_exit.agree) == (0.9, 2)
    assert cfg.eval.decoders[1].engine.eviction == EvictionConfig(budget=48, window=16, scorer="recency")
    assert cfg.eval.decoders[2].students == ["original", "gogi-skip"]

    kv = load_config(RunConfig, None, [f"eval.decoders=[{{name: ev, engine: {EVICT}}}]"])
    assert kv.eval.decoders == [DecoderRow("ev", EngineConfig(continuous=True, slots=4, eviction=EvictionConfig(
        budget=6, window=2, scorer="recency")))]
    assert kv.eval.decoders[0].students == ["original"]  # the default: the uncompressed control
    assert [(n, m.name) for n, m, _ in kv.decoder_rows()] == [("original+ev", "original")]
    assert load_config(EvalConfig, None, []).decoders == []


@pytest.mark.parametrize("override,key,message", [
    ("eval.decoders=[{name: ee, engine: {slots: 4}}]", "eval.decoders[0].engine.continuous",
     "decoder row 'ee' decodes with the continuous engine"),
    ("eval.decoders=[{name: ee, engine: {continuous: true}, students: [original, nope]}]",
     "eval.decoders[ee].students", r"\['nope'\] name no row; decoder 'ee' applies to method rows, which are "
     r"\['original'\]"),
    ("eval.decoders=[{name: ee, engine: {continuous: true}}, {name: ee, engine: {continuous: true}}]",
     "eval.decoders", "names must be unique"),
    ("eval.decoders=[{name: a/b, engine: {continuous: true}}]", "eval.decoders[0].name", "must be a plain file name"),
    ("eval.decoders=[{name: ee, engine: {continuous: true}, students: []}]", "eval.decoders[0].students",
     "decoder row .ee. names no student"),
])
def test_bad_decoders_are_config_errors(override, key, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: {message}"):
        load_config(RunConfig, None, [override])


def test_a_decoder_row_may_not_take_a_methods_name():
    with pytest.raises(ConfigError, match=r"^eval.decoders: row 'original\+ee' would be both"):
        load_config(RunConfig, None, ["methods=[{name: original}, {name: original+ee}]",
                                      "eval.decoders=[{name: ee, engine: {continuous: true}}]"])


def test_tables_show_peak_kv_only_where_a_row_has_it():
    row = dict(benchmark="b", n=4, accuracy=0.5, mean_cot_tokens=10.0, act_ratio=1.0, latency_s=0.1,
               throughput_tok_s=100.0, speedup=1.0)
    plain = [MethodResult("original", **row)]
    assert PEAK_KV not in markdown_table(plain)
    both = plain + [MethodResult("original+ev", **row, mean_cache_peak=17.25, early_exit_share=0.0)]
    lines = markdown_table(both).splitlines()
    assert lines[0].endswith(f"| {PEAK_KV} |") and lines[1].count("|") == lines[0].count("|")
    assert lines[2].endswith("| - |  |") and lines[3].endswith("| 17.2 |")  # blank where a row has none
    assert PEAK_KV not in model_table({"a": {"n": 1}})
    from jaxcot.eval.html import results_table

    dicts = [dict(r.__dict__) for r in both]
    assert PEAK_KV not in results_table(dicts[:1])
    page = results_table(dicts)
    assert f"<th>{PEAK_KV}</th></tr>" in page and "<td></td></tr>" in page and "<td>17.2</td></tr>" in page
    assert model_table({"a": {"n": 1}, "b": {"n": 1, "mean_cache_peak": 3.0}}).splitlines()[3].endswith("| 3.0 |")


def test_a_decoder_row_through_jaxcot_run(tiny_model_folder, tmp_path):
    """One decoder row on 'original' (KV eviction under a small budget), added to a finished run:
    the row is evaluated with its own Generator (the same weights, the engine) beside the student,
    nothing else is made again, and it shows in results.json, report.md and report.html with a
    peak KV/row column; a second run reuses it."""
    overrides = [
        f"model={tiny_model_folder}", "name=d", f"runs_dir={tmp_path}", "data.n_train=8", "data.n_test=4",
        "generate.source=reference", "data.auc_samples=4", "score.batch_size=8",
        "methods=[{name: original, method: original}]", "student.max_steps=1", "student.batch_size=8",
        "student.data.max_len=256", "eval.max_new_tokens=12", "eval.batch_size=4", "eval.latency_samples=1",
    ]
    root = run_pipeline(load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"), overrides))["root"]
    student = os.path.join(root, "eval", "original.json")
    mtime = os.path.getmtime(student)
    # the decoder row added to the finished run (configs/demo-decode.yaml after `make demo`): only the
    # eval stage (the new row, and the latency of all rows together) and the report run again
    cfg = load_config(RunConfig, os.path.join(ROOT, "configs", "demo.yaml"),
                      overrides + [f"eval.decoders=[{{name: evict, engine: {EVICT}}}]"])
    out = run_pipeline(cfg)
    assert set(out["timings"]) == {"eval", "report"} and os.path.getmtime(student) == mtime
    res = json.load(open(os.path.join(root, "results.json")))
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == ["original", "original+evict"]
    assert rows["original"]["mean_cache_peak"] is None
    peak = rows["original+evict"]["mean_cache_peak"]
    assert peak is not None and peak > 0
    assert rows["original+evict"]["retained"] == rows["original"]["retained"]  # the same student, the same set
    ev = json.load(open(os.path.join(root, "eval", "original+evict.json")))
    assert ev["mean_cache_peak"] == peak and "mean_cache_peak" not in json.load(
        open(os.path.join(root, "eval", "original.json")))
    # the budget holds: at most the prompt, 6 chain tokens and the one being written (12 unevicted)
    from jaxcot.models import load_tokenizer
    from jaxcot.text.prompts import PromptConfig, prompt_ids

    tok = load_tokenizer(os.path.join(root, "students", "original", "model"))
    test = [json.loads(x) for x in open(os.path.join(root, "data", "test.jsonl"))]
    prompts = [len(prompt_ids(tok, q["question"], PromptConfig(template="{question}"))) for q in test]
    assert ev["mean_new_tokens"] == 12 and sum(prompts) / len(prompts) < peak <= sum(prompts) / len(prompts) + 6 + 1
    assert set(json.load(open(os.path.join(root, "eval", "latency.json")))["latency_s"]) == set(rows)
    from jaxcot.provenance import meta_path

    settings = json.load(open(meta_path(os.path.join(root, "eval", "original+evict.json"))))["settings"]
    assert settings["eval.engine"]["eviction"]["budget"] == 6
    assert "eval.engine" not in json.load(open(meta_path(os.path.join(root, "eval", "original.json"))))["settings"]
    table = open(os.path.join(root, "report.md")).read()
    head = next(line for line in table.splitlines() if line.startswith("| method |"))
    assert head.endswith(f"| {PEAK_KV} |")
    assert f"| {peak:.1f} |" in next(line for line in table.splitlines() if line.startswith("| original+evict |"))
    assert "original+evict: the student of original, decoding with the continuous engine" in table
    html = open(os.path.join(root, "report.html")).read()
    assert f"<th>{PEAK_KV}</th>" in html and ">original+evict</td>" in html
    again = run_pipeline(cfg)
    assert set(again["timings"]) == {"report"}  # the decoder row is reused like any student


def test_rows_of_one_student_share_its_loaded_weights(tiny_model_folder, monkeypatch):
    """A decoder row decodes with its own Generator (its engine) over the weights its method row's
    student already loaded: the model is read from disk once per student."""
    import jaxcot.models
    from jaxcot.eval.students import Student, _load
    from jaxcot.programs import ProgramCache

    loads, real = [], jaxcot.models.load_model
    monkeypatch.setattr(jaxcot.models, "load_model", lambda path, *a, **k: loads.append(path) or real(path, *a, **k))
    cache, programs = {}, ProgramCache()
    static, _ = _load(Student("a", tiny_model_folder), cache, programs, EngineConfig())
    engine, _ = _load(Student("a+evict", tiny_model_folder, engine=EngineConfig(continuous=True, slots=2)),
                      cache, programs, EngineConfig())
    assert static is not engine and engine.engine.continuous and not static.engine.continuous
    assert _load(Student("b", tiny_model_folder), cache, programs, EngineConfig())[0] is static
    assert loads == [tiny_model_folder]
