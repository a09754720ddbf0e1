"""The arithmetic testbed: word problems with verbose chains and ground-truth token roles
(`problems`, `roles`), their word-level tokenizer (`tokenizer`), and the small teacher the demo
starts from (`teacher`, `jaxcot testbed ...`)."""

from jaxcot.testbed.problems import TestbedConfig, generate, make_problem
from jaxcot.testbed.roles import equation_oracle, importance_vs_roles, oracle_scores, token_roles
from jaxcot.testbed.teacher import EVAL_OFFSET, TeacherConfig, teacher_path, train_teacher
from jaxcot.testbed.tokenizer import build_testbed_tokenizer

__all__ = [
    "EVAL_OFFSET", "TeacherConfig", "TestbedConfig", "build_testbed_tokenizer", "equation_oracle", "generate",
    "importance_vs_roles", "make_problem", "oracle_scores", "teacher_path", "token_roles", "train_teacher",
]
