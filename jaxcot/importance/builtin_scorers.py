"""The built-in model scorers of `jaxcot.importance.scorers.SCORERS` (see its table): each a
function of a `ScoreBatch` returning {field: per-trace scores [n_i]}."""

from __future__ import annotations

import numpy as np

from jaxcot.importance.scorers import ScoreBatch, TraceFields


def gogi_scorer(batch: ScoreBatch) -> TraceFields:
    return {"gogi": [t.gogi for t in batch.gogi]}


def entropy_scorer(batch: ScoreBatch) -> TraceFields:
    return {"entropy": [t.entropy for t in batch.gogi]}


def self_info_scorer(batch: ScoreBatch) -> TraceFields:
    return {"self_info": [t.self_info for t in batch.gogi]}


def llmlingua_scorer(batch: ScoreBatch) -> TraceFields:
    """LLMLingua-2 keep probabilities per chain token, from the checkpoint folder
    `ScoreConfig.llmlingua` (loaded once per stage)."""
    if not batch.cfg.llmlingua:
        raise ValueError("scorer 'llmlingua' needs the checkpoint folder: score.llmlingua=PATH (--llmlingua PATH)")
    if "llmlingua" not in batch.session:
        from jaxcot.importance.llmlingua import LLMLinguaScorer

        batch.session["llmlingua"] = LLMLinguaScorer.from_pretrained(batch.cfg.llmlingua)
    model = batch.session["llmlingua"]
    return {"llmlingua": [model.token_scores(rec["chain"], e.pieces) for e, rec in zip(batch.encoded, batch.records)]}


def _on_device(batch: ScoreBatch) -> dict:
    return batch.arrays.on(batch.mesh)


def _chains(batch: ScoreBatch, values) -> list[np.ndarray]:
    """Per record, its chain tokens' entries of a padded [rows, T] array."""
    values = np.asarray(values)
    return [values[r, e.chain] for r, e in enumerate(batch.encoded)]


def _layers(batch: ScoreBatch) -> tuple[int, ...]:
    from jaxcot.importance.gogi import normalize_layers

    return normalize_layers(batch.cfg.layers, batch.model.config.num_layers)


def _option(batch: ScoreBatch, scorer: str, key: str, default):
    return batch.cfg.options.get(scorer, {}).get(key, default)


def grad_x_act_scorer(batch: ScoreBatch) -> TraceFields:
    from jaxcot.importance.attribution import path_attribution

    a = _on_device(batch)
    return {"grad_x_act": _chains(batch, path_attribution(batch.model, **a, layers=_layers(batch), alphas=(1.0,),
                                                          max_answer=batch.arrays.max_answer))}


def integrated_gradients_scorer(batch: ScoreBatch) -> TraceFields:
    from jaxcot.importance.attribution import midpoints, path_attribution

    steps = int(_option(batch, "integrated_gradients", "steps", 16))
    a = _on_device(batch)
    return {"integrated_gradients": _chains(batch, path_attribution(
        batch.model, **a, layers=_layers(batch), alphas=midpoints(steps), max_answer=batch.arrays.max_answer))}


def attention_scorer(batch: ScoreBatch) -> TraceFields:
    from jaxcot.importance.attribution import answer_attention

    return {"attention": _chains(batch, answer_attention(batch.model, **_on_device(batch)))}


def counterfactual_scorer(batch: ScoreBatch) -> TraceFields:
    from jaxcot.importance.attribution import ablation_effect, chain_span

    chunk = int(_option(batch, "counterfactual", "chunk", 8))
    return {"counterfactual": _chains(batch, ablation_effect(
        batch.model, **_on_device(batch), layers=_layers(batch), max_answer=batch.arrays.max_answer, chunk=chunk,
        span=chain_span(batch.arrays.chain_mask)))}


def reference_scorer(batch: ScoreBatch) -> TraceFields:
    """log p(x_t) under the scored model minus under a reference model of the same tokenizer
    (`options.reference.model`, a HF folder or GGUF file, loaded once): CTS's token score."""
    from jaxcot.importance.attribution import self_information

    path = _option(batch, "reference", "model", None)
    if not path:
        raise ValueError("scorer 'reference' needs the reference model: score.options.reference.model=PATH")
    if "reference" not in batch.session:
        from jaxcot.models import load_model

        ref = load_model(path, dtype=batch.model.dtype, mesh=batch.mesh)
        if ref.config.vocab_size != batch.model.config.vocab_size:
            raise ValueError(f"{path}: the reference model's vocabulary ({ref.config.vocab_size}) is not the scored "
                             f"model's ({batch.model.config.vocab_size}): it must share the tokenizer")
        batch.session["reference"] = ref
    a = _on_device(batch)
    ref_info = self_information(batch.session["reference"], a["tokens"], a["mask"])
    return {"reference": [r - t.self_info for r, t in zip(_chains(batch, ref_info), batch.gogi)]}


__all__ = ["attention_scorer", "counterfactual_scorer", "entropy_scorer", "gogi_scorer", "grad_x_act_scorer",
           "integrated_gradients_scorer", "llmlingua_scorer", "reference_scorer", "self_info_scorer"]
