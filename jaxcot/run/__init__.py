"""`jaxcot run`: the whole method as stages over one run folder (`RunConfig`, `run_pipeline`)."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("MethodSpec", "QuestionsConfig", "RunConfig"),
    "runner": ("run_pipeline",),
})
