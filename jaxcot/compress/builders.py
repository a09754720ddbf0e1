"""Training-set builders: (prompt, completion) SFT examples from compressed chains.

An example is `{"id", "prompt", "completion", "method", "gamma", "kept", "total"}`:
- `prompt`: the question text (plain format), or TokenSkip's `question<eot>gamma<eot>` (the
  TokenSkip repository's exact layout, no spaces; `template` changes it), or, with
  `prompt_style="chat"`, a list of chat messages whose user turn holds that text;
- `completion`: compressed chain + `answer_sep` + answer (the answer is copied verbatim; with the
  default `answer_sep=""` an uncompressed chain gives back exactly chain + answer);
- `gamma`: the retention the chain was compressed at (None where the rule has no gamma), `kept` /
  `total`: chain tokens after / before.
TokenSkip with gamma 1.0 is the original chain with no marker in the prompt.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable, Sequence

import numpy as np

from jaxcot.text.grading import Grader, grade_gsm8k

DEFAULT_GAMMAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TOKENSKIP_TEMPLATE = "{question}{eot}{gamma}{eot}"

def is_correct(record: dict, grader: Grader = grade_gsm8k) -> bool | None:
    """The record's `correct` field when present, else grader(answer, gold) when `gold` is present,
    else None (unverifiable)."""
    if "correct" in record and record["correct"] is not None:
        return bool(record["correct"])
    if record.get("gold") is not None:
        return bool(grader(str(record["answer"]), str(record["gold"])))
    return None


def select_correct(
    records: Iterable[dict], *, grader: Grader = grade_gsm8k, unverified: str = "drop"
) -> tuple[list[dict], dict]:
    """Keep only correct traces. unverified="drop" (default) or "keep" decides traces with neither
    `correct` nor `gold`. Returns (kept records, counts {"incorrect": n, "unverified": n,
    "unverified_kept": n})."""
    if unverified not in ("drop", "keep"):
        raise ValueError(f"unverified must be 'drop' or 'keep', got {unverified!r}")
    kept, counts = [], {"incorrect": 0, "unverified": 0, "unverified_kept": 0}
    for rec in records:
        ok = is_correct(rec, grader)
        if ok is None:
            if unverified == "keep":
                counts["unverified_kept"] += 1
                kept.append(rec)
            else:
                counts["unverified"] += 1
        elif ok:
            kept.append(rec)
        else:
            counts["incorrect"] += 1
    return kept, counts


def stable_seed(seed: int, key: str) -> list[int]:
    """A per-record seed sequence independent of record order: [seed, crc32(key)]."""
    return [int(seed) & 0xFFFFFFFF, zlib.crc32(str(key).encode("utf-8"))]


def draw_gamma(record_id: str, gammas: Sequence[float] = DEFAULT_GAMMAS, seed: int = 0) -> float:
    """One gamma drawn uniformly from `gammas` for this record (deterministic in seed and id)."""
    if not gammas:
        raise ValueError("gammas is empty")
    rng = np.random.default_rng(stable_seed(seed, record_id))
    return float(gammas[int(rng.integers(len(gammas)))])


def format_gamma(gamma: float) -> str:
    """0.5 -> '0.5', 0.7 -> '0.7' (shortest form, as the TokenSkip repository writes ratios)."""
    return format(float(gamma), "g")


def tokenskip_prompt(question: str, gamma: float, *, eot: str = "<|im_end|>",
                     template: str = TOKENSKIP_TEMPLATE) -> str:
    """`question<eot>gamma<eot>`; gamma 1.0 (uncompressed) gives the bare question."""
    if gamma >= 1.0:
        return question
    return template.format(question=question, eot=eot, gamma=format_gamma(gamma))


def make_prompt(text: str, *, prompt_style: str = "text", system: str | None = None):
    """The prompt as text, or (prompt_style="chat") as a list of chat messages."""
    if prompt_style == "text":
        return text
    if prompt_style == "chat":
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": text}]
    raise ValueError(f"prompt_style must be 'text' or 'chat', got {prompt_style!r}")


def make_example(
    record: dict,
    compressed_chain: str,
    *,
    method: str,
    gamma: float | None,
    kept: int,
    total: int,
    fmt: str = "plain",
    eot: str = "<|im_end|>",
    template: str = TOKENSKIP_TEMPLATE,
    prompt_style: str = "text",
    system: str | None = None,
    answer_sep: str = "",
) -> dict:
    """One SFT example (see the module docstring). fmt: "plain" or "tokenskip"."""
    question = str(record["question"])
    if fmt == "tokenskip":
        if gamma is None:
            raise ValueError(f"record {record.get('id')!r}: the TokenSkip format needs a gamma")
        text = tokenskip_prompt(question, gamma, eot=eot, template=template)
    elif fmt == "plain":
        text = question
    else:
        raise ValueError(f"fmt must be 'plain' or 'tokenskip', got {fmt!r}")
    return {
        "id": str(record["id"]),
        "prompt": make_prompt(text, prompt_style=prompt_style, system=system),
        "completion": compressed_chain + answer_sep + str(record["answer"]),
        "method": method,
        "gamma": None if gamma is None else float(gamma),
        "kept": int(kept),
        "total": int(total),
    }


def prompt_text(prompt) -> str:
    """The text of a prompt (string, or the contents of its chat messages joined by newlines)."""
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


def length_filter(
    examples: Iterable[dict],
    *,
    max_tokens: int | None = None,
    count_tokens: Callable[[dict], int] | None = None,
    max_chain_tokens: int | None = None,
) -> tuple[list[dict], dict]:
    """Drop examples that are too long; every drop is counted.

    max_tokens: bound on count_tokens(example) (e.g. prompt + completion tokens under the student's
    tokenizer; required with max_tokens). max_chain_tokens: bound on the compressed chain's
    tokens (`kept`). Returns (kept examples, {"too_long": n, "too_long_chain": n, "max_seen": n}).
    """
    if max_tokens is not None and count_tokens is None:
        raise ValueError("max_tokens needs count_tokens (a tokenizer); use max_chain_tokens to bound chain tokens "
                         "alone")
    out, counts = [], {"too_long": 0, "too_long_chain": 0, "max_seen": 0}
    for ex in examples:
        if max_chain_tokens is not None and ex["kept"] > max_chain_tokens:
            counts["too_long_chain"] += 1
            continue
        if max_tokens is not None:
            n = int(count_tokens(ex))
            counts["max_seen"] = max(counts["max_seen"], n)
            if n > max_tokens:
                counts["too_long"] += 1
                continue
        out.append(ex)
    return out, counts


def tokenizer_counter(tokenizer) -> Callable[[dict], int]:
    """count_tokens for `length_filter` from a HF tokenizer: chat prompts through its chat template
    (with the generation prompt), text prompts as plain text, plus the completion."""

    def count(ex: dict) -> int:
        prompt = ex["prompt"]
        if isinstance(prompt, str):
            p = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        else:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            p = len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        return p + len(tokenizer(ex["completion"], add_special_tokens=False)["input_ids"])

    return count
