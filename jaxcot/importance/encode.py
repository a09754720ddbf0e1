"""Tokenize a trace for scoring: ``prompt | chain | answer`` with span masks and text pieces.

The prompt is built exactly as `jaxcot generate` builds it (`jaxcot.generate.format.prompt_ids`
with a `PromptConfig`: instruction template, optional system turn, chat template with the
generation prompt) and tokenized on its own, as generation and SFT see it. The completion
``chain + sep + answer`` is tokenized as one text with character offsets, as the model would
read it. Each completion token gets the span that holds its *start* character (offsets made
non-decreasing; the first token starts at 0):

- C: tokens starting inside the chain. A token straddling the chain/answer boundary starts in
  the chain, so it belongs to C; its piece is clipped at the chain's end. The answer characters it
  covers belong to no A token (they are still in the sequence, and compression never drops them:
  the answer text is rebuilt from the record, not from pieces).
- A: tokens starting inside the answer. Tokens starting in ``sep`` are in neither span.
  With ``goal="value"``, A is narrowed to the tokens that overlap the answer's *value* (see
  `jaxcot.text.answers.value_span`): "The answer is 16." differentiates the loss of "16" only, not of the
  answer's fixed wording, whose prediction depends on formatting rather than on the reasoning.

A chain token's piece runs from its start to the next token's start (the first from the chain's
start, the last to the chain's end), so ``"".join(pieces) == chain`` exactly, whitespace and
multi-token characters included (a byte-level token that shares its character with the next one
gets an empty piece).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxcot.text.answers import value_span
from jaxcot.text.prompts import PromptConfig, prompt_ids as _prompt_ids


@dataclasses.dataclass(frozen=True)
class EncodedTrace:
    """One trace as token ids with spans: token_ids [T]; chain = slice(c0, c1), answer =
    slice(a0, a1) of token_ids; pieces: the chain tokens' text, ``"".join(pieces) == chain``."""

    token_ids: np.ndarray
    chain: slice
    answer: slice
    pieces: tuple[str, ...]

    @property
    def length(self) -> int:
        return int(self.token_ids.shape[0])

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(chain_mask [T], answer_mask [T]) bool."""
        c = np.zeros(self.length, bool)
        a = np.zeros(self.length, bool)
        c[self.chain] = True
        a[self.answer] = True
        return c, a


GOALS = ("answer", "value")


def token_pieces(text: str, starts: np.ndarray, lo: int, hi: int) -> list[str]:
    """Text pieces of tokens with (non-decreasing) start offsets `starts` [n] that partition
    text[lo:hi]: piece i = text[max(s_i, lo) : s_{i+1}] clipped to [lo, hi); the first piece
    starts at lo and the last ends at hi."""
    n = len(starts)
    if n == 0:
        return []
    bounds = np.clip(np.asarray(starts, np.int64), lo, hi)
    bounds[0] = lo
    ends = np.append(bounds[1:], hi)
    return [text[int(s):int(e)] for s, e in zip(bounds, ends)]


def encode_trace(
    tokenizer, question: str, chain: str, answer: str, *, sep: str = "",
    prompt: PromptConfig | None = None, where: str = "trace", goal: str = "answer", gold: str | None = None,
) -> EncodedTrace:
    """Tokenize ``prompt(question) | chain | sep | answer``; see the module docstring for spans.

    tokenizer: a HF fast tokenizer (offsets needed). prompt: how the question became the prompt
    (default `PromptConfig()`, generation's default). goal: "answer" (A = every answer token,
    docs/method.md, GoGI) or "value" (A = the tokens of the answer's value, found with `gold`, see
    `jaxcot.text.answers.value_span`). `where` names the record in errors.
    """
    if goal not in GOALS:
        raise ValueError(f"{where}: goal must be one of {GOALS}, got {goal!r}")
    if not answer:
        raise ValueError(f"{where}: empty answer: GoGI needs answer tokens to differentiate")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{where}: scoring needs a fast tokenizer (character offsets)")
    prompt_ids = _prompt_ids(tokenizer, question, prompt or PromptConfig())
    completion = chain + sep + answer
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    starts = np.maximum.accumulate(np.array([s for s, _ in enc["offset_mapping"]] or [0], np.int64))[: len(ids)]
    if len(ids):
        starts[0] = 0
    c_end, a_start = len(chain), len(chain) + len(sep)
    n_chain = int(np.sum(starts < c_end)) if chain else 0
    n_pre_answer = int(np.sum(starts < a_start)) if (chain or sep) else 0
    if n_pre_answer == len(ids):
        raise ValueError(f"{where}: the answer {answer[:40]!r} has no token of its own after tokenization")
    if not prompt_ids:
        raise ValueError(f"{where}: the prompt tokenized to nothing")
    p = len(prompt_ids)
    pieces = token_pieces(completion, starts[:n_chain], 0, c_end)
    token_ids = np.asarray(list(prompt_ids) + ids, np.int32)
    a0, a1 = n_pre_answer, len(ids)
    if goal == "value":
        span = value_span(answer, gold)
        if span is None:
            raise ValueError(f"{where}: goal 'value' but the answer {answer[:60]!r} holds no value "
                             f"(gold {gold!r}, no \\boxed{{}}, no number)")
        v0, v1 = a_start + span[0], a_start + span[1]
        ends = np.array([e for _, e in enc["offset_mapping"]], np.int64)
        inside = [i for i in range(n_pre_answer, len(ids)) if starts[i] < v1 and max(ends[i], starts[i] + 1) > v0]
        if not inside:  # the value's characters belong to a token that starts before the answer
            raise ValueError(f"{where}: goal 'value': no answer token covers the value {answer[span[0]:span[1]]!r}")
        a0, a1 = inside[0], inside[-1] + 1
    return EncodedTrace(
        token_ids=token_ids,
        chain=slice(p, p + n_chain),
        answer=slice(p + a0, p + a1),
        pieces=tuple(pieces),
    )


def encode_record(tokenizer, record: dict[str, Any], *, sep: str = "", prompt: PromptConfig | None = None,
                  where: str = "trace", goal: str = "answer") -> EncodedTrace:
    """`encode_trace` on a trace record (fields question, chain, answer; `gold` for goal 'value')."""
    for key in ("question", "chain", "answer"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{where}: field {key!r} must be a string")
    gold = record.get("gold")
    return encode_trace(tokenizer, record["question"], record["chain"], record["answer"], sep=sep,
                        prompt=prompt, where=where, goal=goal, gold=None if gold is None else str(gold))


__all__ = ["GOALS", "EncodedTrace", "encode_record", "encode_trace", "token_pieces"]
