"""The code's own rules, checked: ruff, the import contracts, long functions explained, no
citation of a file outside the repository."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxcot"


def _tool(name: str) -> str:
    """The console script installed beside this Python (the test extras install it)."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the test extras (pip install -e '.[test]')")
    return path


def test_ruff_passes():
    out = subprocess.run([_tool("ruff"), "check", "--output-format", "concise", "jaxcot", "tests", "benchmarks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_import_contracts_hold():
    """Packages import down the pipeline only; jaxcot.text needs no jax; torch is never imported
    (the contracts are in pyproject.toml, [tool.importlinter])."""
    out = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" in out.stdout and "0 broken" in out.stdout


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_long_functions_say_why():
    """A function over 80 lines carries a sentence in its docstring saying why it is long."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for fn in _functions(ast.parse(path.read_text())):
            if fn.end_lineno - fn.lineno + 1 > 80 and "is long because" not in (ast.get_docstring(fn) or ""):
                bad.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)")
    assert not bad, bad


def test_no_reference_outside_the_repository():
    """Code and configs cite docs/method.md, never the workplace's METHOD.md or ../shared."""
    hits = [f"{p.relative_to(ROOT)}" for folder in ("jaxcot", "configs", "tests", "benchmarks")
            for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".md")
            and p.name != "test_architecture.py"
            and ("METHOD.md" in p.read_text(errors="ignore") or "../shared" in p.read_text(errors="ignore"))]
    assert not hits, hits
    assert (ROOT / "docs" / "method.md").exists()
