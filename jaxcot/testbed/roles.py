"""Ground truth of testbed chains: the role of every character and token, the working equations,
and the importance it implies.

Roles are defined in `jaxcot.testbed.problems` (essential: the working equations' operands,
operators, equals signs and results; everything else removable).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from jaxcot.testbed.problems import EQ_LEADS, ESSENTIAL_ROLES, ROLES


def char_roles(record: dict) -> list[str]:
    """Role of every character of `record["chain"]`: list[str] of length len(chain).

    Raises ValueError when the spans do not tile the chain exactly.
    """
    chain, spans = record["chain"], record["roles"]
    out: list[str] = []
    pos = 0
    for start, end, role in spans:
        if start != pos or end < start or role not in ROLES:
            raise ValueError(f"record {record.get('id')!r}: bad role span {[start, end, role]} at char {pos}")
        out.extend([role] * (end - start))
        pos = end
    if pos != len(chain):
        raise ValueError(f"record {record.get('id')!r}: role spans cover {pos} of {len(chain)} chars")
    return out


def offsets_from_pieces(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character offsets [(start, end)] of consecutive text pieces (a scored record's `pieces`)."""
    out, pos = [], 0
    for p in pieces:
        out.append((pos, pos + len(p)))
        pos += len(p)
    return out


def token_roles(record: dict, offsets: Iterable[tuple[int, int]]) -> list[str]:
    """One role per token, from token character offsets [(start, end)] into `record["chain"]`.

    A token with no characters gets "none"; an all-whitespace token gets "space"; a token that
    touches an essential character gets the highest-priority essential role among them
    (step_result > operand > operator > equals), so merged pieces like " 17." count as results;
    otherwise the role of its first non-space character.
    """
    chain = record["chain"]
    roles = char_roles(record)
    rank = {r: i for i, r in enumerate(ESSENTIAL_ROLES)}
    out = []
    for start, end in offsets:
        if not 0 <= start <= end <= len(chain):
            raise ValueError(f"record {record.get('id')!r}: token offset {(start, end)} outside chain of "
                             f"{len(chain)} chars")
        idx = [i for i in range(start, end) if not chain[i].isspace()]
        if start == end:
            out.append("none")
        elif not idx:
            out.append("space")
        else:
            ess = [roles[i] for i in idx if roles[i] in rank]
            out.append(min(ess, key=rank.__getitem__) if ess else roles[idx[0]])
    return out


def essential_mask(roles: Sequence[str]) -> list[bool]:
    """True where a token's role is needed to reach the answer (the equations' tokens)."""
    return [r in ESSENTIAL_ROLES for r in roles]


_WORKING_EQUATION = re.compile(
    "(?:" + "|".join(re.escape(lead) for leads in EQ_LEADS.values() for lead in leads) + r") (\d+ [-+*] \d+ = \d+)"
)


def working_equation_chars(chain: str) -> list[bool]:
    """True on the characters of the chain's working equations (`a op b = r` after a step's lead),
    False elsewhere, including equations re-stated by re-checks and reviews.

    For any text in the testbed's format, a reference chain or a chain a model wrote, this equals
    the essential roles of `char_roles` on the non-space characters: the roles of a generated
    chain, which carries no role spans.
    """
    out = [False] * len(chain)
    for m in _WORKING_EQUATION.finditer(chain):
        out[m.start(1):m.end(1)] = [not c.isspace() for c in m.group(1)]
    return out


def equation_oracle(pieces: Sequence[str]) -> list[float]:
    """Ground-truth importance per chain token [n]: 1.0 where the token touches a working
    equation's character, else 0.0 (`pieces` are the scored record's chain pieces)."""
    chars = working_equation_chars("".join(pieces))
    return [float(any(chars[a:b])) for a, b in offsets_from_pieces(pieces)]


def oracle_scores(pieces: list[str], key: str = "") -> np.ndarray:
    """Ground-truth importance [n] of a chain's token pieces, for the 'oracle' methods: 1 + u on
    working-equation tokens, u elsewhere, u = 0.5 * `random_scores` (seed 0, `key`), so a rule
    keeps every equation first and fills its ratio at random."""
    from jaxcot.importance.scorers import random_scores

    return np.asarray(equation_oracle(pieces), np.float32) + 0.5 * random_scores(len(pieces), 0, key)


ORACLE_SCORER = "jaxcot.testbed.roles:oracle_scorer"  # how a config names it


def oracle_scorer(batch) -> dict[str, list[np.ndarray]]:
    """The ground truth as a scorer (`jaxcot.importance.scorers`, named
    ``jaxcot.testbed.roles:oracle_scorer``): field ``oracle``, `oracle_scores` of each chain."""
    return {"oracle": [oracle_scores(list(batch.pieces(r)), rec["id"]) for r, rec in enumerate(batch.records)]}


def importance_vs_roles(model, tokenizer, records: Sequence[dict], cfg) -> dict[str, dict[str, float]]:
    """ROC-AUC of each scorer's fields against the essential roles of testbed `records`
    (reference chains, scored teacher-forced with the `ScoreConfig` `cfg`, the random scorer
    added): {field: {"auc", "n_tokens"}}, the mean of per-trace AUCs, fields in scorer order."""
    import dataclasses

    from jaxcot.eval.metrics import importance_auc
    from jaxcot.importance.score import score_traces
    from jaxcot.importance.scorers import NOT_SCORES

    names = [n for n in cfg.scorers if n != ORACLE_SCORER] + ([] if "random" in cfg.scorers else ["random"])
    scored = score_traces(model, tokenizer, records, dataclasses.replace(cfg, scorers=names), progress=False)
    labels, sources = [], {}
    for rec in scored:
        s = rec["scores"]
        labels.append(np.asarray(essential_mask(token_roles(rec, offsets_from_pieces(s["pieces"]))), bool))
        for key in s:
            if key not in NOT_SCORES:
                sources.setdefault(key, []).append(np.asarray(s[key], np.float64))
    n_tokens = int(sum(len(lab) for lab in labels))
    return {k: {"auc": float(importance_auc(v, labels)), "n_tokens": n_tokens} for k, v in sources.items()}


__all__ = ["ORACLE_SCORER", "char_roles", "equation_oracle", "essential_mask", "importance_vs_roles",
           "offsets_from_pieces",
           "oracle_scorer", "oracle_scores", "token_roles", "working_equation_chars"]
