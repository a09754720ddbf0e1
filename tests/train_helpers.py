"""Tiny SFT runs for the training tests: a JSONL of arithmetic examples and a TrainConfig."""

from __future__ import annotations

import json
import os

import numpy as np

from jaxcot.config import from_dict

TINY_MODEL = dict(
    family="llama", vocab_size=0, hidden_size=32, intermediate_size=64, num_layers=2,
    num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=128,
)


def write_examples(path, n: int = 16, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            a, b = int(rng.integers(2, 30)), int(rng.integers(2, 30))
            f.write(json.dumps({"id": str(i), "prompt": f"What is {a} + {b}?",
                                "completion": f"{a} + {b} = {a + b}. The answer is {a + b}."}) + "\n")
    return os.fspath(path)


def tiny_config(tmp_path, name: str = "run", *, n_examples: int = 16, **over):
    """A TrainConfig dict -> TrainConfig: tiny random llama, word tokenizer, one length bucket
    (one compile), no progress bar; `over` replaces top-level keys (nested dicts merge)."""
    from jaxcot.train.config import TrainConfig

    data_path = tmp_path / "train.jsonl"
    if not data_path.exists():
        write_examples(data_path, n_examples)
    cfg = dict(
        output_dir=os.fspath(tmp_path / name),
        model=dict(TINY_MODEL),
        tokenizer="word",
        method="full",
        data=dict(path=os.fspath(data_path), max_len=48, buckets=[48]),
        optim=dict(lr=1e-2, warmup_steps=0, clip_norm=1.0),
        mesh=dict(devices=1),
        checkpoint=dict(every=1000, keep=2),
        batch_size=4,
        grad_accum=1,
        epochs=1,
        seed=0,
        progress=False,
        export=False,
    )
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return from_dict(TrainConfig, cfg)


def flat(tree) -> dict[str, np.ndarray]:
    """'a/b/0/c' -> numpy array for every leaf of a pure-dict / nnx state."""
    import jax

    from jaxcot.sharding import path_str

    return {path_str(p): np.asarray(jax.device_get(x)) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def model_params(model) -> dict[str, np.ndarray]:
    from flax import nnx

    return flat(nnx.state(model, nnx.Param).to_pure_dict())


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)
