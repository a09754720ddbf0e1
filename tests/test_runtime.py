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
        "x = jnp.ones((1536, 1536))\n"
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
    # 2 x 9 MB of scratch (under the 32 MB from which even the tuned malloc maps): ~4.6k 4 KB pages
    # per call by default, ~0 tuned. With transparent
    # huge pages on for every mapping, the default faults far less and there is little to fix.
    if faults["default"] < 1_000:
        pytest.skip(f"glibc's defaults fault only {faults['default']:.0f} pages per call here (huge pages?)")
    assert faults["tuned"] < 0.1 * faults["default"], faults


def test_compilation_cache_is_used_on_a_second_run_and_changes_nothing(tmp_path):
    """A command run twice compiles its large programs once: the second run loads them from the
    cache folder JAXCOT_CACHE_DIR names; with the cache off (JAXCOT_COMPILATION_CACHE=0) nothing is
    stored; the output is the same either way."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = tmp_path / "model"
    subprocess.run([sys.executable, "-c", (
        "from jaxcot.models import ModelConfig, init_model, save_hf\n"
        "from jaxcot.testbed.tokenizer import build_testbed_tokenizer\n"
        "tok = build_testbed_tokenizer(sample=20)\n"
        "cfg = ModelConfig(family='llama', vocab_size=len(tok), hidden_size=256, intermediate_size=768,\n"
        "                  num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, tie_word_embeddings=True,\n"
        "                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)\n"
        f"save_hf(init_model(cfg, 0), {str(model)!r}, tokenizer=tok)\n")], cwd=root, check=True,
        env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu"))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"id": str(i), "question": f"Tom has {i} apples."}) + "\n"
                                              for i in range(4)))

    def run(out, **env):
        proc = subprocess.run([sys.executable, "-m", "jaxcot.cli", "generate", f"--model={model}",
                               f"--data={tmp_path / 'q.jsonl'}", f"--out={tmp_path / out}", "--max-new-tokens", "64"],
                              cwd=root, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu", XLA_FLAGS="", **env))
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = next(x for x in proc.stderr.splitlines() if "compiled programs" in x)
        return (tmp_path / out).read_text(), line

    cache = tmp_path / "cache"
    first, said1 = run("a.jsonl", JAXCOT_CACHE_DIR=str(cache))
    second, said2 = run("b.jsonl", JAXCOT_CACHE_DIR=str(cache))
    off, said3 = run("c.jsonl", JAXCOT_CACHE_DIR=str(tmp_path / "unused"), JAXCOT_COMPILATION_CACHE="0")
    assert "0 from the compilation cache" in said1 and "0 from the compilation cache" not in said2, (said1, said2)
    assert any(p.is_file() for p in (cache / "xla").rglob("*"))
    assert not (tmp_path / "unused").exists() and "0 from the compilation cache" in said3
    assert first == second == off


def test_sigterm_lost_inside_a_gc_callback_still_stops():
    """A SIGTERM handled while Python runs a gc callback (jax registers one) raises where Python
    drops the exception; the command must still end as interrupted, not exit 0."""
    import gc
    import os
    import signal
    import time

    import pytest

    from jaxcot.runtime import Interrupted, sigterm_raises

    def during_gc(phase, info):
        if phase == "start":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, inside the callback

    with pytest.raises(Interrupted, match="only once the work was done"):
        with sigterm_raises():
            gc.callbacks.append(during_gc)
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(during_gc)
