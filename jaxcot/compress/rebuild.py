"""Text side of compression: rebuild a chain from kept pieces, split a chain into steps, and
classify pieces by kind for the statistics.

Rebuild rules (nothing else is done to the text):
- token rules: the compressed chain is the concatenation of the kept tokens' own pieces, in the
  original order; whitespace is not repaired, doubled spaces are not collapsed, unless
  `collapse_spaces=True`, which replaces every run of two or more ASCII spaces by one space
  (newlines and tabs untouched);
- step rules: a pruned step's content is replaced by the marker (default `[SKIP]`); the step's
  leading and trailing whitespace (its separator) is kept verbatim, so steps stay on their lines;
- the answer is never part of the chain and is never touched here.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Sequence

import numpy as np

DEFAULT_STEP_PATTERN = r"\n[ \t]*\n"  # a blank line ends a step

_SPACES = re.compile(r" {2,}")


def rebuild_tokens(pieces: Sequence[str], keep: Sequence[bool], *, collapse_spaces: bool = False) -> str:
    """Join the kept pieces in order. pieces [C] str, keep [C] bool -> compressed chain text."""
    if len(pieces) != len(keep):
        raise ValueError(f"pieces has {len(pieces)} entries but keep has {len(keep)}")
    text = "".join(p for p, k in zip(pieces, keep) if k)
    return _SPACES.sub(" ", text) if collapse_spaces else text


def token_offsets(pieces: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Character (start, end) of each piece in "".join(pieces): two int64 arrays [C]."""
    lengths = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
    ends = np.cumsum(lengths)
    return ends - lengths, ends


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a chain: tokens [tok_start, tok_end), text = chain[char_start:char_end]."""

    tok_start: int
    tok_end: int
    char_start: int
    char_end: int
    has_content: bool  # False for a step made of whitespace only (never pruned, not counted)


def split_steps(pieces: Sequence[str], pattern: str = DEFAULT_STEP_PATTERN) -> tuple[np.ndarray, list[Step]]:
    """Split a chain into steps at the matches of `pattern` (a blank line by default).

    A separator belongs to the step it ends. Steps are token-aligned: a token belongs to the step
    its last character falls in, so a piece straddling a separator stays whole (".\n\n" ends its
    step; "\n\nThe" starts the next one, the separator becoming that step's leading whitespace).
    pieces [C] -> (step_ids [C] int32, dense 0..S-1 in order, steps [S]).
    """
    text = "".join(pieces)
    starts, ends = token_offsets(pieces)
    bounds = np.array([m.end() for m in re.finditer(pattern, text) if m.end() > m.start()], np.int64)
    raw = np.searchsorted(bounds, ends, side="left") if len(pieces) else np.zeros(0, np.int64)
    # dense renumbering: steps that received no token disappear
    step_ids = np.zeros(len(pieces), np.int32)
    if len(pieces):
        step_ids[1:] = np.cumsum(raw[1:] != raw[:-1])
    steps = []
    for sid in range(int(step_ids[-1]) + 1 if len(pieces) else 0):
        idx = np.flatnonzero(step_ids == sid)
        a, b = int(idx[0]), int(idx[-1]) + 1
        cs, ce = int(starts[a]), int(ends[b - 1])
        steps.append(Step(a, b, cs, ce, bool(text[cs:ce].strip())))
    return step_ids, steps


def rebuild_steps(chain: str, steps: Sequence[Step], prune: Sequence[bool], *, marker: str = "[SKIP]") -> str:
    """Replace each pruned step's content by `marker`, keeping its surrounding whitespace.

    chain str, steps [S], prune [S] bool -> text.
    """
    out = []
    for st, p in zip(steps, prune):
        seg = chain[st.char_start : st.char_end]
        if p and st.has_content:
            lead = seg[: len(seg) - len(seg.lstrip())]
            trail = seg[len(seg.rstrip()) :]
            out.append(lead + marker + trail)
        else:
            out.append(seg)
    return "".join(out)


KINDS = ("digits", "operators", "words", "punctuation", "spaces", "newlines", "mixed")
_OPERATORS = set("+-*/=×÷^<>≤≥≠±%−·")
_NUMBER = re.compile(r"^\d+([.,]\d+)*$")


def piece_kind(piece: str) -> str:
    """Kind of one piece (surrounding spaces ignored): digits, operators, words, punctuation,
    spaces (whitespace without a newline), newlines (whitespace with one), or mixed."""
    s = piece.strip()
    if not s:
        return "newlines" if ("\n" in piece or "\r" in piece) else "spaces"
    if _NUMBER.match(s):
        return "digits"
    if all(ch in _OPERATORS for ch in s):
        return "operators"
    if all(ch.isalpha() or ch in "'’" for ch in s):
        return "words"
    if all(unicodedata.category(ch)[0] in "PS" for ch in s):
        return "punctuation"
    return "mixed"


def trailing_whitespace_mask(pieces: Sequence[str]) -> np.ndarray:
    """True for the run of whitespace-only pieces at the end of the chain: [C] bool."""
    mask = np.zeros(len(pieces), bool)
    for i in range(len(pieces) - 1, -1, -1):
        if pieces[i].strip():
            break
        mask[i] = True
    return mask


def number_groups(pieces: Sequence[str]) -> np.ndarray:
    """Which number each piece belongs to: [C] int, -1 for pieces outside numbers.

    A number is a maximal run of pieces of kind "digits" (`piece_kind`), each later piece starting
    right after the previous one with no whitespace between: tokenizers that split "126" into
    "1", "2", "6" (or "12", "6") give one group.
    """
    groups = np.full(len(pieces), -1, np.int64)
    current, prev_digit = -1, False
    for i, p in enumerate(pieces):
        is_digit = piece_kind(p) == "digits"
        if is_digit and prev_digit and not p[:1].isspace():
            groups[i] = current
        elif is_digit:
            current += 1
            groups[i] = current
        prev_digit = is_digit and not p[-1:].isspace()
    return groups


UNIT_SCORES = ("token", "mean", "max")
_EXPR_JOIN = set("+-*/=×÷^−·()")  # operators and brackets that join numbers into one expression


def expression_groups(pieces: Sequence[str]) -> np.ndarray:
    """Which unit each piece belongs to when arithmetic is kept whole: [C] int, -1 outside.

    An expression is a maximal run of number groups (`number_groups`) joined by operator or
    bracket pieces, with whitespace-only pieces allowed between them: "13 + 7 = 20" (however the
    tokenizer splits it) is one unit. It starts and ends on a number or bracket, never on
    whitespace, so the text around it is untouched. A number outside any expression is a unit of
    its own, as in `number_groups`.
    """
    nums = number_groups(pieces)
    joins = [bool(p.strip()) and all(ch in _EXPR_JOIN for ch in p.strip()) for p in pieces]
    groups = np.full(len(pieces), -1, np.int64)
    unit, i, n = -1, 0, len(pieces)
    while i < n:
        if nums[i] < 0 and not (joins[i] and pieces[i].strip().startswith("(")):
            i += 1
            continue
        unit += 1
        j, last = i, i  # last: the last piece that may end the unit (a number or a bracket)
        while j < n:
            p = pieces[j]
            if nums[j] >= 0 or joins[j]:
                groups[j] = unit
                if nums[j] >= 0 or p.strip().endswith(")"):
                    last = j
                j += 1
            elif not p.strip() and "\n" not in p and j + 1 < n and (nums[j + 1] >= 0 or joins[j + 1]):
                groups[j] = unit  # a space between parts of the expression
                j += 1
            else:
                break
        groups[last + 1 : j] = -1  # a trailing operator ("20 =" before a word) stays outside
        i = max(last + 1, i + 1)
    return groups


def unit_scores(scores: np.ndarray, groups: np.ndarray, how: str) -> np.ndarray:
    """scores [C] with every unit's pieces given the unit's `how` (mean | max) score; pieces
    outside units (groups -1) keep their own. how 'token' returns scores unchanged."""
    if how not in UNIT_SCORES:
        raise ValueError(f"unit_score must be one of {UNIT_SCORES}, got {how!r}")
    scores = np.asarray(scores, np.float32)
    if how == "token" or not groups.size or groups.max(initial=-1) < 0:
        return scores
    inside = groups >= 0
    g = groups[inside]
    if how == "mean":
        agg = np.bincount(g, weights=scores[inside]) / np.bincount(g)
    else:
        agg = np.full(int(g.max()) + 1, -np.inf)
        np.maximum.at(agg, g, scores[inside])
    out = scores.copy()
    out[inside] = agg[g]
    return out


def whole_units(keep: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`keep` [C] bool with every unit of `groups` (a number, an expression) kept whole when any
    of its pieces is kept (a partial number, "12" left of "126", reads as a different number).
    Keeping more never lengthens a run of drops, so the N-constraint still holds."""
    keep = np.asarray(keep, bool).copy()
    if groups.size and groups.max(initial=-1) >= 0:
        inside = groups >= 0
        any_kept = np.zeros(int(groups.max()) + 1, bool)
        np.logical_or.at(any_kept, groups[inside], keep[inside])
        keep[inside] = any_kept[groups[inside]]
    return keep
