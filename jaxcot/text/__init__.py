"""Text rules with no jax: the chain/answer boundary and answer reading (`answers`), graders
(`grading`, the registry; their rules in `gsm8k`, `latex`, `expressions` and `compare`), and
prompt building (`prompts`)."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "answers": ("gold_answer", "last_boxed", "parse_number", "split_answer", "stated_number"),
    "grading": ("get_grader", "grade_gsm8k", "grade_math"),
    "prompts": ("DEFAULT_INSTRUCTION", "PromptConfig", "prompt_ids", "prompt_text"),
})
