"""How a question becomes a prompt: an instruction template, an optional system turn, and the
tokenizer's chat template. Generation, scoring and evaluation all build prompts here, so a
trace is scored with exactly the prompt it was generated from."""

from __future__ import annotations

import dataclasses

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


__all__ = ["DEFAULT_INSTRUCTION", "PromptConfig", "prompt_ids", "prompt_text"]
