"""libtpu for `jaxcot plan`, kept out of the user's environment.

Compiling for a TPU topology on a CPU host needs libtpu's compile-only path. With libtpu installed
in the environment (as `jax[tpu]` puts it), every jax process on a host without TPUs tries to start
a TPU backend and prints `unexpected worker hostname` errors. So `jaxcot plan` keeps the libtpu
that this jax's own `tpu` extra pins in a folder of its own (JAXCOT_LIBTPU_PATH, else
`~/.cache/jaxcot/libtpu-<pin>`), installs it there on first use with pip (`--no-deps --target`),
and puts that folder on `sys.path` of the planning process alone.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys


def pinned_libtpu() -> str:
    """The libtpu requirement of the installed jax's `tpu` extra, e.g. 'libtpu==0.0.42.*'."""
    for req in importlib.metadata.requires("jax") or []:
        name, _, marker = req.partition(";")
        if re.match(r"\s*libtpu\b", name) and "tpu" in marker:
            return name.strip().replace(" ", "")
    raise RuntimeError("the installed jax names no libtpu in its tpu extra; install one with "
                       f"`{sys.executable} -m pip install --target DIR libtpu` and set JAXCOT_LIBTPU_PATH=DIR")


def libtpu_folder(requirement: str | None = None) -> str:
    """Where the private libtpu lives: JAXCOT_LIBTPU_PATH, else a cache folder named by the pin."""
    if os.environ.get("JAXCOT_LIBTPU_PATH"):
        return os.path.abspath(os.environ["JAXCOT_LIBTPU_PATH"])
    pin = re.sub(r"[^\w.]+", "-", requirement or pinned_libtpu()).strip("-.")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "jaxcot", pin)


def install_libtpu(folder: str, requirement: str, say=print) -> None:
    """pip-install `requirement` alone into `folder`, atomically (a half-done install is never used)."""
    partial = f"{folder}.{os.getpid()}.partial"
    say(f"jaxcot plan: installing {requirement} into {folder} (once; kept apart from this environment)")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", partial, requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not install {requirement} into {folder}: {done.stderr.strip()[-800:]}; "
                               "install it there yourself (`pip install --no-deps --target DIR libtpu`) and set "
                               "JAXCOT_LIBTPU_PATH=DIR")
        os.makedirs(os.path.dirname(folder) or ".", exist_ok=True)
        if os.path.isdir(os.path.join(folder, "libtpu")):  # another process finished first
            return
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def ensure_libtpu(say=print) -> str | None:
    """Make libtpu importable in this process for compiling only: None when the environment already
    has it (a TPU VM), else the private folder put first on `sys.path` (installed on first use).
    Call it before jax starts a backend."""
    if importlib.util.find_spec("libtpu") is not None:
        return None
    folder = libtpu_folder()
    if not os.path.isdir(os.path.join(folder, "libtpu")):
        install_libtpu(folder, pinned_libtpu(), say)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    importlib.invalidate_caches()
    return folder


__all__ = ["ensure_libtpu", "install_libtpu", "libtpu_folder", "pinned_libtpu"]
