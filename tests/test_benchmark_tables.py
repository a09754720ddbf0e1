"""The README's benchmark tables are the ones `python benchmarks/tables.py` writes from the JSON
results in benchmarks/results/ (fast: no benchmark runs)."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import results  # noqa: E402
import tables  # noqa: E402


def test_readme_tables_match_their_results():
    with open(tables.README) as f:
        text = f.read()
    names = [m.group(2) for m in tables.BLOCK.finditer(text)]
    assert "commands" in names, "the whole-command table is generated from benchmarks/results/commands.json"
    assert tables.stale(text) == [], "run `python benchmarks/tables.py` (README tables differ from their JSON)"


def test_every_results_file_names_its_run():
    for name in sorted(os.listdir(tables.RESULTS)):
        if name.endswith(".json"):
            with open(os.path.join(tables.RESULTS, name)) as f:
                doc = json.load(f)
            for key in ("benchmark", "commit", "date", "cpu", "cores", "command", "versions", "results", "tables"):
                assert doc.get(key) not in (None, "", {}), (name, key)


def test_rewrite_fills_the_marked_tables(tmp_path, monkeypatch):
    """write() -> the file a marker names -> the text between the markers; the rest untouched."""
    monkeypatch.setenv("JAXCOT_BENCHMARK_RESULTS", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--fast"])
    path = results.write("x", {"speed": 2.0}, {"main": dict(results.table(["a", "b"], [[1, "2.00x"]]),
                                                            notes=["one note."]),
                                                "other": results.table(["c"], [["3"]])}, args={"fast": True})
    doc = json.loads(open(path).read())
    assert doc["command"] == "python benchmarks/x.py --fast" and doc["args"] == {"fast": True}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    text = "intro\n<!-- table: x -->\nold\n<!-- /table -->\nmiddle\n<!-- table: x:other -->\n<!-- /table -->\nend\n"
    assert tables.stale(text, str(tmp_path)) == ["x", "x:other"]
    new = tables.rewrite(text, str(tmp_path))
    assert tables.stale(new, str(tmp_path)) == [] and tables.rewrite(new, str(tmp_path)) == new
    first = new.split("<!-- table: x -->\n")[1].split("<!-- /table -->")[0]
    assert "`python benchmarks/x.py --fast` at" in first and "| a | b |\n|---|---|\n| 1 | 2.00x |\n" in first
    assert "one note." in first and "| c |" not in first
    assert "| c |\n|---|\n| 3 |" in new.split("<!-- table: x:other -->")[1]
    assert new.startswith("intro\n") and "\nmiddle\n" in new and new.endswith("end\n")
