"""report.html in a real browser: a small run folder's page loaded in headless Chromium (`make test`
installs the distribution's package when missing): no uncaught JS error, the table's rows, the
plot's points and the examples' token spans in the DOM after the scripts ran, a non-blank screenshot
kept beside the test's files. JAXCOT_UPDATE_SCREENSHOT=1 also copies it to docs/report_screenshot.png;
JAXCOT_REPORT_RUN=<run folder> shows that folder (a copy) instead of the one built here."""

import json
import os
import re
import shutil
import subprocess

import pytest

from jaxcot.eval.html import align, load_run, write_report_html
from jaxcot.eval.report import MethodResult, place_labels, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("original", "gogi-skip", "tokenskip-0.5")
CHAINS = [("a", "Tom has 6 pencils. He finds 4 more.", "Tom has 6 pencils. So 6 + 4 = 10.\n"),
          ("b", "A bus has 13 passengers. 5 get on.", "At the start 13. Then 13 + 5 = 18.\n")]


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    how = ("`make test` installs it (apt-get install chromium)" if shutil.which("apt-get")
           else "apt-get is not available here: install Chromium by hand")
    pytest.skip(f"no headless Chromium on PATH; {how}")


def _write(path, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else "\n".join(map(json.dumps, obj)) + "\n" if isinstance(obj, list)
                else json.dumps(obj))


def tiny_run(root: str) -> str:
    """A run folder as `jaxcot run` leaves one, its numbers made up: results.json (by write_report),
    scored chains, three sets, eval results with outputs, metrics, a leaderboard and fingerprints."""
    rows = [MethodResult(m, "testbed", 8, acc, tok, tok / 30, 0.01, 500.0, 1.0, 24, tok / 30)
            for m, acc, tok in zip(METHODS, (0.75, 0.625, 0.625), (30.0, 16.0, 16.5))]
    write_report(root, rows, title="jaxcot run: tiny", importance_auc={"gogi": {"auc": 0.7, "n_tokens": 40},
                 "random": {"auc": 0.5, "n_tokens": 40}}, timings={"train": 1.5}, notes=["made-up numbers"])
    scored, sets = [], {m: [] for m in METHODS}
    for cid, question, chain in CHAINS:
        pieces = re.findall(r"\s*\S+|\s+", chain)
        n = len(pieces)
        scored.append({"id": cid, "question": question, "chain": chain, "answer": "The answer is 1.",
                       "scores": {"layer": 0, "pieces": pieces, "token_ids": list(range(n)),
                                  "gogi": [(k % 3) / 3 for k in range(n)], "entropy": [k / n for k in range(n)],
                                  "self_info": [1.0 - k / n for k in range(n)], "oracle": [k % 2 for k in range(n)]}})
        for j, m in enumerate(METHODS):
            kept = "".join(p for k, p in enumerate(pieces) if j == 0 or (k + j) % 2)
            sets[m].append({"id": cid, "prompt": question, "completion": kept + "The answer is 1.", "kept": None})
    _write(os.path.join(root, "scored.jsonl"), scored)
    for j, m in enumerate(METHODS):
        _write(os.path.join(root, "sets", f"{m}.jsonl"), sets[m])
        _write(os.path.join(root, "sets", f"{m}.jsonl.meta.json"), {"version": "0", "settings": {"gamma": 0.5},
                                                                    "inputs": {"scored": "ab" * 32}})
        _write(os.path.join(root, "eval", f"{m}.json"), {"n": 8, "accuracy": rows[j].accuracy, "examples": [
            {"question": q, "output": f"{m} <b>writes</b> {q[:10]}", "correct": j != 1} for _, q, _ in CHAINS]})
        _write(os.path.join(root, "students", m, "run", "metrics.jsonl"),
               [{"step": s, "loss": 3.0 / s + j, "grad_norm": 1.0} for s in range(1, 9)])
    _write(os.path.join(root, "grpo", "gogi-skip", "metrics.jsonl"),
           [{"step": s, "reward": s / 10, "completion_tokens": 20 - s, "kl": 0.01 * s} for s in range(1, 6)])
    _write(os.path.join(root, "leaderboard.json"), {"rows": [
        {"layer": la, "scorer": sc, "auc": 0.5 + 0.05 * la * (sc == "gogi"), "ap": 0.5, "agreement": None}
        for la in (0, 1, 2) for sc in ("gogi", "attention")] + [
        {"layer": None, "scorer": "entropy", "auc": 0.55, "ap": 0.5, "agreement": None}]})
    _write(os.path.join(root, "config.yaml"), "name: tiny\nmodel: teacher\n")
    return root


def _chromium(browser: str, tmp, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True, text=True, timeout=90)


def test_report_html_in_headless_chromium(tmp_path):
    browser = _browser()
    source = os.environ.get("JAXCOT_REPORT_RUN")
    root = str(tmp_path / "run")
    if source:
        shutil.copytree(source, root, ignore=shutil.ignore_patterns("model", "checkpoints", "tensorboard"))
    else:
        tiny_run(root)
    page = write_report_html(root)
    assert os.path.getsize(page) < 500_000
    text = open(page).read()
    assert not re.search(r"(src|href)=\"https?:", text)  # self-contained: nothing fetched
    run = load_run(root)
    rows = run["results"]["rows"]
    dom = _chromium(browser, tmp_path, "--dump-dom", f"file://{page}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    opening = re.search(r"<html[^>]*>", html).group(0)  # the trap writes uncaught errors here
    assert 'data-ready="1"' in opening, "the page's script did not finish"
    assert "data-errors" not in opening, opening
    assert "Uncaught" not in dom.stderr
    assert html.count('<tr class="result"') == len(rows)
    assert len(re.findall(r'<circle class="pt"', html)) == len(rows)
    for r in rows:
        assert f">{r['method']}</td>" in html
    pieces = sum(len(rec["scores"]["pieces"]) for rec, _ in run["examples"])
    assert run["examples"] and html.count('class="tok"') == pieces
    heated = re.findall(r'class="tok" data-i="\d+" title="[^"]+" style="background: rgba?\(', html)  # by the JS
    assert len(heated) == pieces
    assert 'class="drop"' in html and 'class="kept"' in html
    if not source:
        assert html.count('<option value="') == 4 * len(CHAINS)  # gogi, entropy, self_info, oracle
        assert html.count('class="curve"') == 3 + 3 + 1 + 1 + 1 + 3  # loss, grad_norm, reward, tokens, kl, layers
        assert "gogi-skip &lt;b&gt;writes&lt;/b&gt;" in html  # outputs side by side, escaped
    shot = tmp_path / "report.png"
    out = _chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", f"file://{page}")
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        assert len(im.convert("RGB").getcolors(1 << 24)) > 20  # not blank: text, charts, heat
    if os.environ.get("JAXCOT_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, os.path.join(ROOT, "docs", "report_screenshot.png"))


def test_jaxcot_report_command_rebuilds_the_page(tmp_path):
    from jaxcot.cli import main

    root = tiny_run(str(tmp_path / "run"))
    assert main(["report", root]) == 0 and os.path.exists(os.path.join(root, "report.html"))
    assert main(["report", str(tmp_path)]) == 2  # no results.json: a user error


def test_align_recovers_the_kept_tokens():
    pieces = ["Okay", ",", " let", " us", " work", " 6", " *", " 2"]
    assert align(pieces, " let work * 2The answer") == [False, False, True, False, True, False, True, True]
    assert align(pieces, "".join(pieces)) == [True] * len(pieces)


def test_labels_do_not_overlap():
    pts = [(100.0, 100.0), (102.0, 101.0), (101.0, 99.0), (300.0, 50.0)]
    widths = [90.0, 140.0, 70.0, 60.0]
    spots = place_labels(pts, widths, 12.0, radius=5.0, bounds=(0, 0, 400, 200))
    boxes = [(x + dx, y + dy, x + dx + w, y + dy + 12.0) for (x, y), (dx, dy), w in zip(pts, spots, widths)]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[2] <= 400 and 0 <= a[1] and a[3] <= 200
        for b in boxes[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)


def test_a_point_highlights_the_row_of_its_own_benchmark():
    from jaxcot.eval.html import results_table, scatter_svg

    rows = [{"method": m, "accuracy": a, "mean_cot_tokens": t} for m, a, t in (("original", 0.9, 90.0),
                                                                              ("gogi-skip", 0.8, 45.0))]
    page = "".join(results_table(rows, b) + scatter_svg(rows, b, b) for b in ("gsm8k", "math"))
    points = re.findall(r'<circle class="pt" data-row="([^"]+)"', page)
    table_rows = re.findall(r'<tr class="result" data-row="([^"]+)"', page)
    assert points == table_rows == ["gsm8k:0", "gsm8k:1", "math:0", "math:1"]
