"""notebooks/quickstart.ipynb as a user runs it. Its first code cell installs jaxcot where it is
missing: here a fresh virtual environment that has jaxcot's dependencies but not jaxcot, with a copy of
this checkout in the working directory, named jaxcot as a clone on Colab is (so `import jaxcot` finds
an empty namespace package there). Then every cell runs (at a small size) and the plot shows inline,
without touching matplotlib's global backend (no pyplot import). The cell's runtime detection, the pip
requirement it builds and its no-op where jaxcot already imports are checked on their own."""

from __future__ import annotations

import ast
import filecmp
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
PLAIN = os.environ.get("JAXCOT_PLAIN_PYTHON")  # the plain environment `make test` builds: no torch
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def install_cell() -> str:
    code = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    assert "JAXCOT_SOURCE =" in code[0].source  # the first code cell says where jaxcot comes from
    return code[0].source


def cell_functions() -> dict:
    """The install cell's imports and functions, defined without running its install."""
    tree = ast.parse(install_cell())
    body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
    names: dict = {}
    exec(compile(ast.Module(body, type_ignores=[]), "install cell", "exec"), names)
    return names


@pytest.mark.parametrize("env, paths, runtime", [
    ({}, ["/dev/accel0"], "tpu"),  # TPU v2-v4 VM (Colab's "TPU v2-8")
    ({}, ["/dev/vfio/vfio", "/dev/vfio/0"], "tpu"),  # TPU v5e / v6e VM
    ({"TPU_ACCELERATOR_TYPE": "v5e-1"}, [], "tpu"),
    ({"COLAB_TPU_1VM": "1"}, [], "tpu"),
    ({}, ["/dev/vfio/vfio"], "cpu"),  # the VFIO control node alone is no TPU
    ({"COLAB_TPU_ADDR": "10.0.0.2:8470", "COLAB_TPU_1VM": ""}, [], "cpu"),  # the retired TPU Node runtime
    ({}, ["/usr/bin/nvidia-smi"], "gpu"),
    ({}, ["/dev/nvidiactl"], "gpu"),
    ({"COLAB_GPU": "1"}, [], "gpu"),
    ({"COLAB_GPU": "0", "COLAB_TPU_1VM": ""}, [], "cpu"),
    ({}, [], "cpu"),
])
def test_install_cell_detects_the_runtime(env, paths, runtime):
    assert cell_functions()["detect_runtime"](env, paths) == runtime


def test_install_cell_requirement(tmp_path):
    requirement = cell_functions()["requirement"]
    (tmp_path / "clone").mkdir()
    (tmp_path / "clone" / "pyproject.toml").write_text("")
    (tmp_path / "jaxcot-0.1.0-py3-none-any.whl").write_bytes(b"")
    assert requirement(str(tmp_path / "clone"), "tpu") == f"jaxcot[tpu] @ {(tmp_path / 'clone').as_uri()}"
    wheel = tmp_path / "jaxcot-0.1.0-py3-none-any.whl"
    assert requirement(str(wheel), "cuda") == f"jaxcot[cuda] @ {wheel.as_uri()}"
    assert requirement("https://example.org/x/jaxcot.git") == "jaxcot @ git+https://example.org/x/jaxcot.git"
    with pytest.raises(FileNotFoundError, match="JAXCOT_SOURCE"):
        requirement(str(tmp_path / "missing"))


def test_install_cell_installs_nothing_where_jaxcot_imports(monkeypatch, capsys):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the install cell ran {args} though jaxcot imports")

    monkeypatch.setattr(subprocess, "run", no_subprocess)  # neither pip nor a probe of the runtime
    monkeypatch.setenv("JAXCOT_SOURCE", "/nonexistent")
    exec(compile(install_cell(), "install cell", "exec"), {})
    assert "is installed" in capsys.readouterr().out


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _site_packages(python: str) -> Path:
    return Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True).strip())


def _requirements_closure(roots) -> dict:
    """The distributions of this environment that `roots` need, recursively: {name: distribution}."""
    from packaging.requirements import Requirement

    found, todo = {}, list(roots)
    while todo:
        name = _canonical(todo.pop())
        if name in found:
            continue
        try:
            found[name] = dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _link(dists, shadow: Path, skip: set) -> set:
    """Symlink the top-level files and folders of `dists` into `shadow`, but those named in `skip`."""
    linked = set()
    for dist in dists:
        name = _canonical(dist.metadata["Name"])
        if name in skip or name in linked:
            continue
        linked.add(name)
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or ()} - {"..", "__pycache__"}:
            if not (shadow / top).exists() and (site / top).exists():
                (shadow / top).symlink_to(site / top)
    return linked


def fresh_environment(where: Path) -> str:
    """A virtual environment without jaxcot (and without pip of its own) whose site-packages sees, through a
    .pth file, every package of the plain environment (JAXCOT_PLAIN_PYTHON, else this one) but jaxcot, plus
    ipykernel and a setuptools that builds wheels from this environment. Returns its python."""
    base = PLAIN or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    python = str(where / "bin" / "python")
    shadow = where / "deps"
    shadow.mkdir()
    linked = _link(importlib.metadata.distributions(path=[str(_site_packages(base))]), shadow, {"jaxcot", "setuptools"})
    _link(_requirements_closure(["ipykernel", "setuptools"]).values(), shadow, linked | {"jaxcot"})
    (_site_packages(python) / "deps.pth").write_text(f"{shadow}\n")
    return python


@pytest.mark.slow
def test_quickstart_notebook_installs_jaxcot_and_runs(tmp_path, monkeypatch):
    python = fresh_environment(tmp_path / "venv")
    clone = tmp_path / "jaxcot"  # a clone in the working directory, as on Colab
    shutil.copytree(ROOT / "jaxcot", clone / "jaxcot", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    missing = subprocess.run([python, "-c", "import jaxcot.models"], cwd=tmp_path, env=env, capture_output=True,
                             text=True)
    assert "No module named 'jaxcot.models'" in missing.stderr  # jaxcot is missing there at first
    kernel = tmp_path / "jupyter" / "kernels" / "fresh"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "fresh",
        "language": "python"}))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    for key, value in {"JAXCOT_NB_TRAIN": "16", "JAXCOT_NB_TEST": "6", "JAXCOT_NB_STEPS": "4",
                       "JAXCOT_NB_DIR": os.fspath(tmp_path / "work"), "XLA_FLAGS": "",  # one CPU device, as on a laptop
                       "JAXCOT_SOURCE": os.fspath(clone), "JAXCOT_PIP_ARGS": "--no-index --no-build-isolation",
                       "JAXCOT_CACHE_DIR": os.fspath(tmp_path / "cache"),
                       "JUPYTER_PATH": os.fspath(tmp_path / "jupyter")}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits them
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('import sys, matplotlib, jaxcot\nprint("pyplot" in sys.modules, '
                                              'matplotlib.get_backend(), jaxcot.__file__)'))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="fresh", resources={"metadata": {"path": tmp_path}})
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)  # every cell ran
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    said = "".join(o.get("text", "") for o in code[0].outputs)
    assert "installed jaxcot 0.1.0" in said and "cpu runtime" in said, said
    site = _site_packages(python)
    (record,) = site.glob("jaxcot-*.dist-info")
    assert json.loads((record / "direct_url.json").read_text())["url"] == clone.as_uri()  # from the checkout
    assert filecmp.cmp(site / "jaxcot" / "runtime.py", ROOT / "jaxcot" / "runtime.py", shallow=False)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[-2].outputs)  # the plot, inline
    assert any("text/html" in o.get("data", {}) and "GoGI" in o["data"]["text/html"] for o in outputs)
    assert any("text/markdown" in o.get("data", {}) and "gogi-skip" in o["data"]["text/markdown"] for o in outputs)
    shown = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split()
    assert shown[0] == "False"  # pyplot never imported: the notebook's backend is the user's
    assert shown[2] == os.fspath(site / "jaxcot" / "__init__.py")  # the kernel uses the install, not the folder
    assert any((tmp_path / "cache" / "xla").iterdir())  # the compilation cache is on
    for name in ("original", "gogi-skip", "random-0.5"):
        assert os.path.isfile(tmp_path / "work" / "students" / name / "model" / "config.json")
