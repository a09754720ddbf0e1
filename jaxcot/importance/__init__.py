"""Token importance: GoGI (goal-gradient), predictive entropy, self-information, LLMLingua-2."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "baselines": ("SOURCES", "importance", "random_scores"),
    "config": ("ScoreConfig", "select_traces"),
    "encode": ("EncodedTrace", "encode_record", "encode_trace"),
    "gogi": ("Scores", "default_layer", "gogi_scores", "predictive_stats"),
    "score": ("TraceScores", "iter_scored", "layer_probe", "score_traces", "write_scores"),
})
