"""notebooks/quickstart.ipynb runs top to bottom (at a small size) and shows its plot inline,
without touching matplotlib's global backend (no pyplot import)."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.slow
def test_quickstart_notebook_runs_and_plots(tmp_path, monkeypatch):
    for key, value in {"JAXCOT_NB_TRAIN": "16", "JAXCOT_NB_TEST": "6", "JAXCOT_NB_STEPS": "4",
                       "JAXCOT_NB_DIR": os.fspath(tmp_path / "work"), "XLA_FLAGS": "", "PYTHONPATH": ROOT}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits them; one CPU device, as on a laptop
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('import sys, matplotlib\nprint("pyplot" in sys.modules, '
                                              'matplotlib.get_backend())'))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in nb.cells[-2].outputs)  # the plot, inline
    assert any("text/html" in o.get("data", {}) and "GoGI" in o["data"]["text/html"] for o in outputs)
    assert any("text/markdown" in o.get("data", {}) and "gogi-skip" in o["data"]["text/markdown"] for o in outputs)
    shown = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()
    assert shown[0] == "False"  # pyplot never imported: the notebook's backend is the user's
    for name in ("original", "gogi-skip", "random-0.5"):
        assert os.path.isfile(tmp_path / "work" / "students" / name / "model" / "config.json")
