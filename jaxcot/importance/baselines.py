"""Importance sources besides GoGI, per chain token, as float32 arrays [n].

- self-information ``-log p(x_t | x_<t)``: computed with GoGI (``scores["self_info"]``);
- predictive entropy per token (``scores["entropy"]``): the input of step-entropy pruning, whose
  step splitting lives in `jaxcot.compress`;
- random: uniform scores, reproducible from a seed and the record id;
- LLMLingua-2: `jaxcot.importance.llmlingua` (``scores["llmlingua"]`` when requested);
- oracle (testbed runs only, ``scores["oracle"]``): the ground truth
  (`jaxcot.testbed.roles.oracle_scores`), the ceiling an importance can reach.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

SOURCES = ("gogi", "self_info", "entropy", "random", "llmlingua", "oracle")


def random_scores(n: int, seed: int, key: str = "") -> np.ndarray:
    """Uniform [0, 1) scores [n], the same for the same (seed, key) on every machine."""
    rng = np.random.default_rng([int(seed), zlib.crc32(str(key).encode("utf-8"))])
    return rng.random(n).astype(np.float32)


def importance(record: dict[str, Any], source: str, seed: int = 0) -> np.ndarray:
    """Per-chain-token importance [n] of a scored record from one of `SOURCES`."""
    if "scores" not in record:
        raise ValueError(f"record {record.get('id')!r} has no 'scores' (run `jaxcot score` first)")
    s = record["scores"]
    if source == "random":
        return random_scores(len(s["token_ids"]), seed, record.get("id", ""))
    if source not in SOURCES:
        raise ValueError(f"unknown importance source {source!r}; choose from {SOURCES}")
    if source not in s:
        raise ValueError(f"record {record.get('id')!r} has no scores[{source!r}]"
                         + (" (score with --llmlingua PATH)" if source == "llmlingua" else "")
                         + (" (only testbed runs of `jaxcot run` carry it)" if source == "oracle" else ""))
    return np.asarray(s[source], np.float32)


__all__ = ["SOURCES", "importance", "random_scores"]
