"""The arithmetic testbed: word problems with verbose chains and ground-truth token roles
(`problems`, `roles`), their word-level tokenizer (`tokenizer`), and the small teacher the demo
starts from (`teacher`, `jaxcot testbed ...`)."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "problems": ("TestbedConfig", "generate", "make_problem"),
    "roles": ("equation_oracle", "importance_vs_roles", "oracle_scores", "token_roles"),
    "teacher": ("EVAL_OFFSET", "TeacherConfig", "teacher_path", "train_teacher"),
    "tokenizer": ("build_testbed_tokenizer",),
})
