"""Several processes of one JAX job on loopback, for the multi-process tests (not a test module)."""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(cmds: list[list[str]], *, env: dict, cwd: str | None = None, timeout: float = 900) -> list[str]:
    """Start every command at once, wait for all, and return their outputs (stdout with stderr);
    any still running at the end (a timeout, an error) is killed. Asserts each exited with 0."""
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs
