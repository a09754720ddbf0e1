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
    """Packages import down the pipeline only; jaxcot.text and generate/config.py need no jax; torch
    is never imported; the sampler imports no stage; only jaxcot.run and jaxcot.cli import the
    testbed; no import cycle inside a package (the contracts are in pyproject.toml, [tool.importlinter])."""
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


def _top(module: str) -> str:
    """The top-level package (or module) of jaxcot a dotted module name belongs to."""
    return module.split(".")[1] if module.startswith("jaxcot.") else module


def _is_module(dotted: str) -> bool:
    """True when `dotted` (jaxcot.x.y) names a module or package of this repository."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_uses(path: pathlib.Path) -> list[str]:
    """`from jaxcot.x import _name` and `module._name` in `path`, where jaxcot.x is another top-level
    package than the one `path` is in, as "file:line name"."""
    here = _top(".".join(path.relative_to(ROOT).with_suffix("").parts))
    tree = ast.parse(path.read_text())
    modules, bad = {}, []  # local name -> the other package's module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "jaxcot":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _private(alias.name) and _top(node.module) != here:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {full}")
                elif _is_module(full) and _top(full) != here:
                    modules[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxcot.") and _top(alias.name) != here and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        owner = ast.unparse(node.value)
        target = modules.get(owner, owner if owner.startswith("jaxcot.") else None)
        if target is not None and _top(target) != here:
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {target}.{node.attr}")
    return bad


def test_no_private_name_across_packages():
    """No module uses a private name (`_name`) of another top-level package, by import or by
    attribute: what a package offers the others is its public names, so its private ones can change."""
    bad = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_uses(path)]
    assert not bad, bad
