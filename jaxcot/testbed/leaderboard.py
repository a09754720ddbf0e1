"""Importance on trial on the testbed: every scorer against its ground truth, at every layer.

On reference chains (teacher-forced, so the roles are known) the truth is the essential tokens
(the working equations' operands and results, `essential_mask`); the leaderboard itself (the
scoring over layers, the rows, the table, the plot) is `jaxcot.eval.leaderboard`'s.

    jaxcot testbed leaderboard --model teacher --samples 100 --out runs/leaderboard
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxcot.eval import leaderboard as _general
from jaxcot.eval.leaderboard import DEFAULT_SCORERS, LAYERED, format_table, plot, write_leaderboard
from jaxcot.testbed.roles import essential_mask, offsets_from_pieces, token_roles


def essential_truth(scored: dict) -> np.ndarray:
    """The essential tokens of a scored testbed record's chain: bool [C]."""
    return np.asarray(essential_mask(token_roles(scored, offsets_from_pieces(scored["scores"]["pieces"]))), bool)


def leaderboard(model, tokenizer, records: Sequence[dict], cfg, *, layers: Sequence[int],
                scorers: Sequence[str] = DEFAULT_SCORERS, progress: bool = True) -> list[dict]:
    """Rows {layer, scorer, auc, ap, agreement} over the testbed reference chains `records` against
    their essential tokens (`jaxcot.eval.leaderboard.leaderboard` with `essential_truth`)."""
    return _general.leaderboard(model, tokenizer, records, cfg, truth=essential_truth, layers=layers,
                                scorers=scorers, progress=progress)


__all__ = ["DEFAULT_SCORERS", "LAYERED", "essential_truth", "format_table", "leaderboard", "plot",
           "write_leaderboard"]
