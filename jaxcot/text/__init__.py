"""Text rules with no jax: the chain/answer boundary and answer reading (`answers`), graders
(`grading`), and prompt building (`prompts`)."""

from jaxcot.text.answers import gold_answer, last_boxed, parse_number, split_answer, stated_number
from jaxcot.text.grading import get_grader, grade_gsm8k, grade_math
from jaxcot.text.prompts import DEFAULT_INSTRUCTION, PromptConfig, prompt_ids, prompt_text

__all__ = [
    "DEFAULT_INSTRUCTION", "PromptConfig", "get_grader", "gold_answer", "grade_gsm8k", "grade_math", "last_boxed",
    "parse_number", "prompt_ids", "prompt_text", "split_answer", "stated_number",
]
