"""Several processes of one JAX job on loopback, for the multi-process tests (not a test module)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def worker_setup(devices: int) -> None:
    """For a subprocess worker script, before anything imports jax: the CPU backend with `devices`
    simulated devices, and this checkout's jaxcot importable."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    sys.path.insert(0, ROOT)


def worker_config(path: str, job: Sequence[str] = ()) -> dict:
    """The run config (a dict) in the JSON file `path`; given job = (PROCESS_ID, NUM_PROCESSES,
    PORT), its `distributed` section makes it that process of a `jax.distributed` job (gloo
    collectives, coordinator on 127.0.0.1:PORT)."""
    with open(path) as f:
        cfg = json.load(f)
    if job:
        pid, n, port = (int(x) for x in job)
        cfg["distributed"] = dict(enabled=True, coordinator=f"127.0.0.1:{port}", num_processes=n, process_id=pid)
    return cfg


def report(**fields) -> None:
    """A worker's last line: 'RESULT {json of fields}', the line the test reads back."""
    print("RESULT " + json.dumps(fields), flush=True)
