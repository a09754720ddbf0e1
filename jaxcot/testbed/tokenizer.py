"""The testbed's word-level tokenizer: every template word in every casing, digits as single
tokens, so any generated (or compressed) text round-trips exactly."""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from jaxcot.testbed.problems import (
    ANSWER,
    EQ_LEADS,
    ESSENTIAL_ROLES,
    FIRST_PREFIX,
    FRIENDS,
    HEDGES,
    NAMES,
    OPENERS,
    PRONOUNS,
    RECHECKS,
    REVIEWS,
    ROLES,
    SCENARIOS,
    STEP_PREFIX,
    SYMBOL,
    THINGS,
    TIMES_WORDS,
    VERIFIES,
    TestbedConfig,
    capitalize,
    generate,
)
from jaxcot.testbed.roles import token_roles


def template_texts(verify: bool = False) -> list[str]:
    """Every template word in every casing and position, so a tokenizer built from these covers
    any generated text (names, items, numbers' digits, punctuation, '[SKIP]'); `verify` adds the
    verification rounds' words (only then, so older tasks keep their vocabularies)."""
    pieces: list[str] = []
    strings: list[str] = list(OPENERS) + list(RECHECKS) + list(HEDGES) + list(REVIEWS) + [ANSWER, FIRST_PREFIX]
    strings += list(VERIFIES) if verify else []
    strings += list(STEP_PREFIX) + list(FRIENDS) + list(THINGS) + list(TIMES_WORDS.values()) + list(SYMBOL.values())
    strings += [w for lead in EQ_LEADS.values() for w in lead] + [n for n, _ in NAMES]
    strings += [w for p in PRONOUNS.values() for w in p.values()] + ["is", "then", "[SKIP]"]
    for scen in SCENARIOS.values():
        for field in dataclasses.fields(scen):
            strings += list(getattr(scen, field.name))
    for s in strings:
        words = re.sub(r"\{[a-z]+\}", " ", s).split()
        for w in words:
            pieces.append(f"{w} {w} {capitalize(w)} {capitalize(w)} ({w}\n{capitalize(w)}")
    pieces.append(" ".join("0123456789") + " " + "".join("0123456789") + " - 1 , 2 . 3 : [SKIP] \n[SKIP]\n\n")
    return pieces


def build_testbed_tokenizer(sample: int = 500, seed: int = 0, cfg: TestbedConfig = TestbedConfig(),
                            extra_tokens: Iterable[str] = ()):
    """Word-level HF tokenizer (`build_word_tokenizer`) covering every testbed template word in
    every casing, digits as single tokens, plus `sample` generated records' texts."""
    from tokenizers import Regex, pre_tokenizers

    from jaxcot.data.wordtok import build_word_tokenizer

    texts = template_texts(verify=cfg.verify_rounds > 0)
    for rec in generate(sample, seed, cfg):
        texts += [rec["question"], rec["chain"], rec["answer"]]
    tok = build_word_tokenizer(texts, extra_tokens=extra_tokens, attach_space=True)
    # Compressed chains join kept pieces, which can glue a paragraph's first word to the word
    # before it ("thatThen"). Testbed text has no apostrophes or hyphens inside words and every
    # piece without a leading space starts with a capital, so splitting a capitalised word off a
    # letter makes any join of pieces tokenizable (and decoding stays exact).
    backend = tok.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [backend.pre_tokenizer, pre_tokenizers.Split(Regex(r"(?<=[a-zA-Z])[A-Z][a-z]+"), behavior="isolated")])
    return tok


def record_texts(records: Iterable[dict]) -> Iterable[str]:
    """The question, chain and answer of each record, in order (what a tokenizer must cover)."""
    for r in records:
        yield from (r["question"], r["chain"], r["answer"])


def check_roundtrip(tokenizer, texts: Iterable[str]) -> None:
    """Raise ValueError naming the first text that does not encode/decode exactly or has <unk>."""
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk in ids:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(f"tokenizer has no piece for part of {text[:60]!r}... (tokens {pieces[:20]})")
        back = tokenizer.decode(ids)
        if back != text:
            raise ValueError(f"tokenizer round trip changed {text[:60]!r} into {back[:60]!r}")


def chain_stats(records: Iterable[dict], tokenizer) -> dict:
    """Token statistics of testbed records under `tokenizer`: chain length (mean, percentiles),
    question and answer lengths, and each role's share of all chain tokens."""
    import numpy as np

    lengths, q_lens, a_lens, counts = [], [], [], dict.fromkeys(ROLES + ("none",), 0)
    for rec in records:
        enc = tokenizer(rec["chain"], return_offsets_mapping=True, add_special_tokens=False)
        for role in token_roles(rec, enc["offset_mapping"]):
            counts[role] += 1
        lengths.append(len(enc["input_ids"]))
        q_lens.append(len(tokenizer(rec["question"], add_special_tokens=False)["input_ids"]))
        a_lens.append(len(tokenizer(rec["answer"], add_special_tokens=False)["input_ids"]))
    if not lengths:
        raise ValueError("chain_stats: no records")
    total = sum(counts.values())
    share = {r: counts[r] / total for r in counts if counts[r]}
    arr = np.asarray(lengths)
    return {
        "records": len(lengths),
        "chain_tokens": {"mean": float(arr.mean()), "p10": float(np.percentile(arr, 10)),
                         "p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
                         "min": int(arr.min()), "max": int(arr.max())},
        "question_tokens_mean": float(np.mean(q_lens)),
        "answer_tokens_mean": float(np.mean(a_lens)),
        "role_share": share,
        "essential_share": sum(share.get(r, 0.0) for r in ESSENTIAL_ROLES),
        "removable_share": 1.0 - sum(share.get(r, 0.0) for r in ESSENTIAL_ROLES),
    }
