"""Stop strings: a compiled token-id suffix check inside the decode loop, and an exact host trim.

A stop string can end in the middle of a token or be split across tokens in ways that depend on
the text before it, so no finite set of token-id sequences catches every occurrence. We use two
layers:

1. In the compiled loop (`match_suffix`): each row keeps its last W generated ids; a row stops
   when they end with one of the stop strings' *known tokenizations*. These are collected at set-up
   by tokenizing each stop string after a few typical left contexts (nothing, a space, a newline,
   a letter, a full stop) and keeping the ids that belong to the stop string, alone and followed by
   a word (a byte-level BPE writes "\n\n" alone as one token, but as two newlines before a word,
   which is how a chain's blank line comes out). This catches the
   usual case with no per-token host work, so rows end early and the loop ends when all rows do.
2. On the host, after the loop (`trim_at_stop`): the decoded text is cut before the first stop
   string that occurs in it, and the row's length becomes the smallest token count whose decoded
   text contains it (found by bisection: containment is monotone in the prefix length). This is
   exact whatever the tokenization, so a tokenization missed by (1) only costs the extra decode
   steps; the returned tokens, log-probabilities and text are the same as with a perfect check.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

CONTEXTS = ("", " ", "\n", "a", ".")
RIGHT_CONTEXTS = ("a", "A", " a")  # what may follow the string in running text


@dataclasses.dataclass(frozen=True)
class StopPatterns:
    """Token-id patterns, right-aligned in a [P, W] table; -1 pads shorter patterns on the left.

    Hashable (tuples) so that it can be part of a jit's static arguments.
    """

    rows: tuple[tuple[int, ...], ...] = ()
    width: int = 1

    @property
    def table(self) -> np.ndarray:
        """[P, W] int32 (P >= 1; an empty set is one all-wildcard row that never fires)."""
        if not self.rows:
            return np.full((0, self.width), -1, np.int32)
        return np.asarray([(-1,) * (self.width - len(r)) + tuple(r) for r in self.rows], np.int32)


def stop_patterns(tokenizer, stop: Sequence[str], max_tokens: int = 16) -> StopPatterns:
    """Known tokenizations of each stop string (see the module docstring), at most `max_tokens` long."""
    rows: list[tuple[int, ...]] = []
    for s in stop:
        if not s:
            raise ValueError("empty stop string")
        for ctx in CONTEXTS:
            pre = tokenizer.encode(ctx, add_special_tokens=False) if ctx else []
            full = tokenizer.encode(ctx + s, add_special_tokens=False)
            if full[: len(pre)] != pre:
                continue  # the context merged into the stop string's first token
            found = [tuple(int(i) for i in full[len(pre):])]
            if not (found[0] and s in tokenizer.decode(list(found[0]))):
                found = []
            for right in RIGHT_CONTEXTS:  # the tokens that spell exactly `s` when text follows it
                full = tokenizer.encode(ctx + s + right, add_special_tokens=False)
                rest = [int(i) for i in full[len(pre):]] if full[: len(pre)] == pre else []
                found += [tuple(rest[:k]) for k in range(1, len(rest))
                          if tokenizer.decode(rest[:k]) == s and tokenizer.decode(rest[k:]) == right][:1]
            rows += [pat for pat in dict.fromkeys(found) if len(pat) <= max_tokens and pat not in rows]
    width = max((len(r) for r in rows), default=1)
    return StopPatterns(rows=tuple(rows), width=width)


def match_suffix(window: Array, table: np.ndarray) -> Array:
    """window [B, W] (last W generated ids, -1 before the first) vs table [P, W] -> [B] bool."""
    if table.shape[0] == 0:
        return jnp.zeros(window.shape[:1], bool)
    pats = jnp.asarray(table)
    hit = (pats[None] < 0) | (window[:, None, :] == pats[None])  # [B, P, W]
    return jnp.any(jnp.all(hit, axis=-1), axis=-1)


def first_stop(text: str, stop: Sequence[str]) -> tuple[int, int] | None:
    """(start, end) of the stop string occurrence that ends first in `text`, or None."""
    best = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best[1]):
            best = (i, i + len(s))
    return best


def trim_at_stop(ids: Sequence[int], decode: Callable[[list[int]], str], stop: Sequence[str]) -> tuple[int, str] | None:
    """If decode(ids) contains a stop string: (number of tokens up to the one that completes it,
    text before it); else None."""
    if not stop:
        return None
    ids = list(ids)
    text = decode(ids)
    hit = first_stop(text, stop)
    if hit is None:
        return None
    lo, hi = 1, len(ids)  # smallest n with a stop string in decode(ids[:n]); hi satisfies it
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(decode(ids[:mid]), stop) is not None:
            hi = mid
        else:
            lo = mid + 1
    cut = first_stop(decode(ids[:hi]), stop)
    return hi, decode(ids[:hi])[: cut[0]]


__all__ = ["StopPatterns", "stop_patterns", "match_suffix", "first_stop", "trim_at_stop"]
