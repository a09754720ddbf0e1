"""`jaxcot run`: the whole method as stages over one run folder (`RunConfig`, `run_pipeline`)."""

from jaxcot.run.config import MethodSpec, QuestionsConfig, RunConfig
from jaxcot.run.runner import run_pipeline

__all__ = ["MethodSpec", "QuestionsConfig", "RunConfig", "run_pipeline"]
