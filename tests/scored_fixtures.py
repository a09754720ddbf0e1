"""Synthetic scored records (preamble format) for the compression tests: no model needed."""

from __future__ import annotations

import numpy as np

WORDS = [" we", " add", " the", " apples", " so", " total", " is", " then", " multiply", " by", " First"]
OPS = [" +", " =", " *", ",", "."]


def scored_record(i: int, rng: np.random.Generator, *, steps=(2, 5), step_len=(4, 25), vocab_size=1000,
                  correct: bool | None = None, gold: str | None = "5") -> dict:
    """A chain of blank-line separated steps of words, digits and operators, with random scores."""
    pieces: list[str] = []
    for _ in range(int(rng.integers(*steps))):
        for _ in range(int(rng.integers(*step_len))):
            r = rng.random()
            if r < 0.6:
                pieces.append(str(rng.choice(WORDS)))
            elif r < 0.8:
                pieces.append(" " + str(rng.integers(0, 10)))
            else:
                pieces.append(str(rng.choice(OPS)))
        pieces.append("\n\n")
    pieces[-1] = "\n"
    n = len(pieces)
    rec = {
        "id": f"r{i}",
        "question": f"Question {i}: how many apples?",
        "chain": "".join(pieces),
        "answer": "The answer is 5.",
        "scores": {
            "layer": 2, "norm": "l1", "token_ids": list(range(n)), "pieces": pieces,
            "gogi": rng.random(n).tolist(), "entropy": (rng.random(n) * 3).tolist(),
            "self_info": (rng.random(n) * 5).tolist(), "vocab_size": vocab_size,
        },
    }
    if gold is not None:
        rec["gold"] = gold
    if correct is not None:
        rec["correct"] = correct
    return rec


def scored_records(n: int, seed: int = 0, **kw) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [scored_record(i, rng, **kw) for i in range(n)]
