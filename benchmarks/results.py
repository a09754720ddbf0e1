"""Every benchmark's results as JSON: `write(name, results, tables)` puts them in
`benchmarks/results/<name>.json` (the last run of that benchmark; git keeps the earlier ones),
with what is needed to judge them: the commit (and whether the tree had changes), the date, the
CPU model and core count, the command line and the versions of the libraries both sides ran.

`JAXCOT_BENCHMARK_RESULTS=DIR` writes them to DIR instead (the tests' tiny runs do, so they
never replace a real run's file). `tables` are what the README shows: {key: {"header": [...],
"rows": [[cell, ...], ...]}} with the cells as printed; `python benchmarks/tables.py` copies them
into the README between `<!-- table: NAME[:KEY] -->` and `<!-- /table -->`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers", "trl", "peft", "torchao")


def results_dir() -> str:
    return os.environ.get("JAXCOT_BENCHMARK_RESULTS") or RESULTS


def _git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Installed versions (from the package metadata: nothing is imported)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment() -> dict:
    """Commit, date, machine and command of this run."""
    return dict(
        commit=_git("rev-parse", "HEAD") or "unknown",
        dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        command=" ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]]),
        versions=versions(),
    )


def table(header: list[str], rows: list[list]) -> dict:
    return {"header": [str(h) for h in header], "rows": [[str(c) for c in r] for r in rows]}


def write(name: str, results, tables: dict[str, dict] | None = None, *, args=None, env: dict | None = None) -> str:
    """Write `<results dir>/<name>.json` atomically (a temporary file renamed into place) and
    return its path. args: the script's argparse namespace (or a dict); env: `environment()`
    taken when the run started (default: now)."""
    doc = dict(benchmark=name, **(env or environment()),
               args=vars(args) if args is not None and not isinstance(args, dict) else (args or {}),
               results=results, tables=tables or {})
    folder = results_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"wrote {os.path.relpath(path, ROOT) if path.startswith(ROOT) else path}", flush=True)
    return path


def teacher_label(path: str | None) -> str:
    """'testbed' for the shipped teacher; 'testbed-overthinking' for runs/teacher-overthinking/model."""
    if path is None:
        return "testbed"
    folder = os.path.basename(os.path.normpath(path))
    if folder == "model":  # `jaxcot testbed teacher` exports to <out_dir>/model
        folder = os.path.basename(os.path.dirname(os.path.normpath(path)))
    return "testbed-" + folder.removeprefix("teacher-")
