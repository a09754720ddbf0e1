import os
import sys

# Tests run on CPU with 8 simulated devices so sharding tests can build meshes; single-device
# code places on device 0 by default and is unaffected.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from jaxcot.runtime import tune_host_allocator  # noqa: E402

tune_host_allocator()  # as the CLI does: XLA:CPU's per-call scratch stays mapped

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory) -> str:
    """A HF folder with a 2-layer random llama (width 32) and the testbed tokenizer: what the
    `jaxcot run` tests fine-tune and evaluate."""
    from jaxcot.models import ModelConfig, init_model, save_hf
    from jaxcot.testbed.tokenizer import build_testbed_tokenizer

    tok = build_testbed_tokenizer(sample=50)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=16, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("model")
    save_hf(init_model(cfg, 0), path, tokenizer=tok)
    return str(path)
