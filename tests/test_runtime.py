import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
    "import ctypes, jaxcot.runtime as r; first = r.tune_host_allocator(); second = r.tune_host_allocator(); "
    "print(first, second)"
)


def _probe(env_value):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("JAXCOT_HOST_MALLOC", None)
    if env_value is not None:
        env["JAXCOT_HOST_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_tuned_on_glibc_and_idempotent():
    import platform

    expect = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert _probe(None) == [expect, expect]


def test_opt_out_leaves_malloc_alone():
    assert _probe("default") == ["False", "False"]


def test_tuned_allocator_stops_per_call_page_faults():
    """The reason the setting exists: a jitted call whose scratch exceeds a thread arena
    page-faults it back in on every call under glibc's defaults, and not once tuned."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting is glibc's: nothing to measure elsewhere")
    code = (
        "import resource, jax, jax.numpy as jnp\n"
        "x = jnp.ones((4096, 4096))\n"
        "f = jax.jit(lambda x: ((x * 2.0) @ (x + 1.0)).sum() + (x * 3.0).sum())\n"
        "f(x).block_until_ready(); f(x).block_until_ready()\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): f(x).block_until_ready()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)\n"
    )
    faults = {}
    for mode in ("default", "tuned"):
        env = dict(os.environ, PYTHONPATH=ROOT, JAXCOT_HOST_MALLOC=mode, JAX_PLATFORMS="cpu", XLA_FLAGS="")
        pre = "from jaxcot.runtime import tune_host_allocator; tune_host_allocator()\n"
        out = subprocess.run([sys.executable, "-c", pre + code], env=env, capture_output=True, text=True, check=True)
        faults[mode] = float(out.stdout.split()[-1])
    # 2 x 64 MB of scratch: ~32k 4 KB pages per call by default, ~0 tuned. With transparent
    # huge pages on for every mapping, the default faults far less and there is little to fix.
    if faults["default"] < 1_000:
        pytest.skip(f"glibc's defaults fault only {faults['default']:.0f} pages per call here (huge pages?)")
    assert faults["tuned"] < 0.1 * faults["default"], faults
