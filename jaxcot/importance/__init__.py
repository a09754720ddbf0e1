"""Token importance: GoGI (goal-gradient), predictive entropy, self-information, LLMLingua-2."""

from jaxcot.importance.baselines import SOURCES, importance, random_scores
from jaxcot.importance.encode import EncodedTrace, encode_record, encode_trace
from jaxcot.importance.gogi import Scores, default_layer, gogi_scores, predictive_stats
from jaxcot.importance.score import TraceScores, iter_scored, layer_probe, score_traces

__all__ = [
    "SOURCES", "importance", "random_scores", "EncodedTrace", "encode_record", "encode_trace",
    "Scores", "default_layer", "gogi_scores", "predictive_stats", "TraceScores", "iter_scored",
    "layer_probe", "score_traces",
]
