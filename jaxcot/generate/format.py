"""Prompt formatting and the split of a completion into chain of thought and answer.

`split_chain_answer` is shared by every stage that needs the answer span (scoring, compression,
evaluation), so that all of them cut a trace at the same place.
"""

from __future__ import annotations

import dataclasses
import re

DEFAULT_INSTRUCTION = (
    "{question}\n"
    "Solve the problem step by step. Finish with a final line of the form \"The answer is N.\""
)


@dataclasses.dataclass
class PromptConfig:
    """How a question becomes a prompt: `template` with a `{question}` field, as the user turn;
    `system` as the system turn (None: none, or the chat template's own default); `chat=False`
    feeds the formatted text without the chat template."""

    template: str = DEFAULT_INSTRUCTION
    system: str | None = None
    chat: bool = True

    def __post_init__(self):
        if "{question}" not in self.template:
            raise ValueError(f"prompt template has no {{question}} field: {self.template!r}")


def prompt_text(tokenizer, question: str, cfg: PromptConfig = PromptConfig()) -> str:
    """The full prompt string for one question (chat template applied, generation prompt added)."""
    user = cfg.template.replace("{question}", question)
    if not cfg.chat:
        return user
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; set prompt.chat: false to use plain text")
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system is not None else []) + [
        {"role": "user", "content": user}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, question: str, cfg: PromptConfig = PromptConfig()) -> list[int]:
    """Token ids of `prompt_text` (the chat template already holds any special tokens it needs)."""
    text = prompt_text(tokenizer, question, cfg)
    return list(tokenizer.encode(text, add_special_tokens=not cfg.chat))


_SENTENCE_END = re.compile(r"[.!?\n]")


def _starts_sentence(text: str, i: int) -> bool:
    before = text[:i].rstrip(" \t")
    return not before or before[-1] in ".!?:\n" or before.endswith(("**", "#"))


def split_chain_answer(text: str, marker: str = "The answer is") -> tuple[str, str]:
    """Split a completion into (chain, answer) with ``chain + answer == text``.

    The answer starts at, in order of preference:
    1. the last occurrence of `marker` that begins a line or a sentence;
    2. else the start of the sentence holding the last occurrence of `marker` in any case
       (e.g. "So the answer is 18.");
    3. else the start of the line holding the last ``\\boxed{``;
    4. else there is no answer: (text, "").
    """
    if marker:
        starts = [m.start() for m in re.finditer(re.escape(marker), text) if _starts_sentence(text, m.start())]
        if starts:
            return text[: starts[-1]], text[starts[-1]:]
        low = text.lower().rfind(marker.lower())
        if low >= 0:
            ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, low)]
            i = ends[-1] if ends else 0
            while i < low and text[i] in " \t":
                i += 1
            return text[:i], text[i:]
    box = text.rfind("\\boxed{")
    if box >= 0:
        i = text.rfind("\n", 0, box) + 1
        return text[:i], text[i:]
    return text, ""


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_gold(answer: str) -> str:
    """The final answer of a reference solution: after GSM8K's '####', else the last \\boxed{},
    else the whole (stripped) text."""
    answer = str(answer)
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = last_boxed(answer)
    return boxed.strip() if boxed is not None else answer.strip()


__all__ = ["PromptConfig", "DEFAULT_INSTRUCTION", "prompt_text", "prompt_ids", "split_chain_answer",
           "last_boxed", "extract_gold"]
