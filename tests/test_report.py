import json
import os

from jaxcot.eval.report import MethodResult, write_report


def test_report_files(tmp_path):
    rows = [
        MethodResult("original", "testbed", 100, 0.91, 120.0, 1.0, 0.20, 900.0, 1.0),
        MethodResult("gogi-ads", "testbed", 100, 0.90, 60.0, 0.5, 0.11, 950.0, 1.82, retained=0.55),
    ]
    auc = {"gogi": {"auc": 0.81, "n_tokens": 1000}, "random": {"auc": 0.50, "n_tokens": 1000}}
    text = write_report(tmp_path, rows, title="demo", importance_auc=auc, timings={"generate": 1.5})
    assert "| gogi-ads | 100 | 90.0% | 60.0 | 0.50 |" in text
    assert text.index("| gogi |") < text.index("| random |")  # sorted by AUC
    png = tmp_path / "accuracy_vs_tokens_testbed.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["rows"][1]["speedup"] == 1.82 and data["importance_auc"]["gogi"]["auc"] == 0.81
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_curves_join_their_rows_in_token_order(tmp_path):
    """A curve (one student asked for several ratios) is a line through its rows, sorted by
    tokens, named in the legend, and kept in results.json."""
    from jaxcot.eval.report import accuracy_vs_tokens_figure

    rows = [MethodResult(name, "testbed", 10, acc, tok, 1.0, 0.1, 100.0, 1.0)
            for name, acc, tok in [("any-0.9", 0.9, 80.0), ("any-0.5", 0.7, 40.0), ("any-0.7", 0.8, 60.0),
                                   ("original", 0.95, 100.0)]]
    curves = {"gogi-ads-ratio: one student, asked for each ratio": ["any-0.9", "any-0.5", "any-0.7"]}
    ax = accuracy_vs_tokens_figure(rows, curves=curves).axes[0]
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [40.0, 60.0, 80.0] and list(line.get_ydata()) == [70.0, 80.0, 90.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    write_report(tmp_path, rows, title="t", curves=curves)
    assert json.loads((tmp_path / "results.json").read_text())["curves"] == curves
