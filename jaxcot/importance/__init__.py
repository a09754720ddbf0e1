"""Token importance by named scorers: GoGI (goal-gradient), predictive entropy, self-information,
random, LLMLingua-2, and a user's own (`jaxcot.importance.scorers`)."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("ScoreConfig", "select_traces"),
    "encode": ("EncodedTrace", "encode_record", "encode_trace"),
    "gogi": ("Scores", "default_layer", "gogi_scores", "predictive_stats"),
    "score": ("TraceScores", "iter_scored", "layer_probe", "score_traces", "write_scores"),
    "scorers": ("SCORERS", "ScoreBatch", "random_scores"),
})
