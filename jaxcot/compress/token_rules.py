"""The token rules: TokenSkip's static ratio, its random baseline, and ADS, applied to chains in
length-sorted, padded batches through the jitted selections of `jaxcot.compress.rules`.

What they share (`TokenRule`): the chain's trailing whitespace is protected (`tokens.
protect_trailing_ws`), units (`tokens.units`) are ranked by their unit's score and kept or
dropped whole, and each chain's keep mask is cut back to its length.
"""

from __future__ import annotations

import abc
import math
from typing import Sequence

import numpy as np

from jaxcot.compress import rebuild, rules
from jaxcot.compress.registry import Chain, Decision
from jaxcot.io import DataError
from jaxcot.logs import progress as progress_bar
from jaxcot.shapes import bucket_length, length_sorted_batches, pad_rows


class TokenRule(abc.ABC):
    """A rule that keeps tokens by score, batch by batch: subclasses give `select(batch, cfg,
    offset) -> keep [B, C]` over the padded arrays of `prepare`."""

    uses_gamma = True
    fixed_gamma = None
    name = "token"

    def needs(self, cfg) -> Sequence[str]:
        return ()

    def prepare(self, chains: Sequence[Chain], cfg, shift: np.ndarray) -> list[dict]:
        """Per batch of chains of similar length: idx, lengths, valid / protect [B, C] bool,
        scores [B, C] float32 (unit scores with `tokens.unit_score`), gamma [B] (+ `shift`),
        units (per chain, with `tokens.units`)."""
        tok = cfg.tokens
        group = {"number": rebuild.number_groups, "expression": rebuild.expression_groups}.get(tok.units)
        lengths = [len(ch) for ch in chains]
        out = []
        for idx in length_sorted_batches(lengths, cfg.batch_size):
            sel = [chains[i] for i in idx]
            b, c = bucket_length(len(idx), 1), bucket_length(max(lengths[i] for i in idx), 16)
            batch = {"idx": idx, "lengths": [lengths[i] for i in idx], "chains": sel}
            batch["valid"] = pad_rows([np.ones(len(ch), bool) for ch in sel], (b, c), bool, False)
            batch["protect"] = np.zeros((b, c), bool)
            if tok.protect_trailing_ws:
                trailing = [rebuild.trailing_whitespace_mask(ch.pieces) for ch in sel]
                batch["protect"] = pad_rows(trailing, (b, c), bool, False)
            batch["scores"] = pad_rows([ch.importance for ch in sel], (b, c), np.float32)
            if group is not None:
                batch["units"] = [group(ch.pieces) for ch in sel]
                if tok.unit_score != "token":
                    for j, groups in enumerate(batch["units"]):
                        batch["scores"][j, : len(groups)] = rebuild.unit_scores(
                            batch["scores"][j, : len(groups)], groups, tok.unit_score)
            batch["gamma"] = np.ones(b, np.float32)
            batch["gamma"][: len(idx)] = [chains[i].gamma + shift[i] for i in idx]
            out.append(batch)
        return out

    @abc.abstractmethod
    def select(self, batch: dict, cfg, offset: float) -> np.ndarray:
        """keep [B, C] bool over the padded batch `batch` (`prepare`), gamma shifted by `offset`."""

    def masks(self, batches: list[dict], n: int, cfg, offset: float = 0.0, progress: bool = True) -> list:
        """Keep masks [C_i] for every chain, gamma shifted by `offset`."""
        masks: list = [None] * n
        for bt in progress_bar(iterable=batches, desc=f"compress ({self.name})", unit="batch",
                               enabled=progress and len(batches) > 3):
            keep = np.asarray(self.select(bt, cfg, offset))
            for j, (i, length) in enumerate(zip(bt["idx"], bt["lengths"])):
                masks[i] = keep[j, :length].copy()
                if "units" in bt:
                    masks[i] = rebuild.whole_units(masks[i], bt["units"][j])
        return masks

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]:
        if not chains:
            return [], {}
        masks = self.masks(self.prepare(chains, cfg, np.zeros(len(chains))), len(chains), cfg)
        return [Decision(m) for m in masks], {}


class Static(TokenRule):
    """TokenSkip's static ratio: keep the tokens at or above the (1 - gamma) quantile of the
    importance (`rules.static_keep`; ties by `static.ties`)."""

    name = "static"

    def select(self, bt: dict, cfg, offset: float) -> np.ndarray:
        valid, protect, gamma = bt["valid"], bt["protect"], bt["gamma"] + np.float32(offset)
        return rules.static_keep(bt["scores"], valid & ~protect, gamma, ties=cfg.static.ties) | (valid & protect)


class Random(Static):
    """The static ratio over uniform scores (`jaxcot.importance.scorers.random_scores`, seed
    `CompressConfig.seed`, keyed by the record id), whatever the importance: the baseline any
    importance must beat."""

    name = "random"

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]:
        from jaxcot.importance.scorers import random_scores

        drawn = [Chain(ch.id, ch.pieces, random_scores(len(ch), cfg.seed, ch.id), ch.scores, ch.gamma, ch.record,
                       ch.where) for ch in chains]
        return super().decide(drawn, cfg)


def _log_vocab(ch: Chain, cfg) -> float:
    v = cfg.ads.vocab_size or ch.record["scores"].get("vocab_size")
    if not v:
        raise DataError(f"{ch.where}: ADS needs the vocabulary size for H/log|V|: the record's scores has no "
                        "'vocab_size'; pass ads.vocab_size=N")
    return math.log(int(v))


class Ads(TokenRule):
    """Adaptive dynamic skipping (docs/method.md, ADS): an entropy-driven rate per token and the
    adaptive N-constraint on consecutive drops (`rules.ads_keep`). With `ads.calibrate`, a common
    offset added to every chain's gamma is found by bisection so that the mean retained ratio
    is within `calibrate_tol` of the mean target (the N-constraint only adds tokens, so ADS
    alone overshoots gamma; retention is monotone in the offset, so bisection is sound)."""

    name = "ads"

    def needs(self, cfg) -> Sequence[str]:
        return ("entropy",)

    def prepare(self, chains, cfg, shift):
        batches = super().prepare(chains, cfg, shift)
        for bt in batches:
            b, c = bt["valid"].shape
            bt["entropy"] = pad_rows([ch.scores["entropy"] for ch in bt["chains"]], (b, c), np.float32)
            bt["logv"] = np.ones(b, np.float32)
            bt["logv"][: len(bt["idx"])] = [_log_vocab(ch, cfg) for ch in bt["chains"]]
        return batches

    def select(self, bt: dict, cfg, offset: float) -> np.ndarray:
        a = cfg.ads
        keep, _, _ = rules.ads_keep(
            bt["scores"], bt["entropy"], bt["valid"], bt["protect"], bt["logv"], bt["gamma"] + np.float32(offset),
            a.beta, a.gamma_min, a.gamma_max, a.eps, a.n_min, a.n_max, a.window, bt["z"][0], bt["z"][1], anc=a.anc,
        )
        return keep

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]:
        if not chains:
            return [], {}
        a = cfg.ads
        z = (None, None)  # the per-trace z-score
        if a.zscore == "fixed":
            pooled = np.concatenate([np.asarray(ch.scores["entropy"], np.float64) for ch in chains] + [np.zeros(0)])
            z = (np.float32(pooled.mean() if a.zscore_mean is None else a.zscore_mean),
                 np.float32(pooled.std() if a.zscore_std is None else a.zscore_std))
        batches = self.prepare(chains, cfg, _trace_shift(chains, a))
        for bt in batches:
            bt["z"] = z
        masks = self.masks(batches, len(chains), cfg)
        info: dict = {}
        if a.calibrate:
            masks, info = _calibrate_per_gamma(self, chains, cfg, masks, batches, z)
        return [Decision(m) for m in masks], info


def _trace_shift(chains: Sequence[Chain], a) -> np.ndarray:
    """trace_beta * (mean_C H - dataset mean) / (dataset std + eps), per chain: [N]."""
    if a.trace_beta == 0.0:
        return np.zeros(len(chains))
    means = np.array([np.mean(ch.scores["entropy"]) if len(ch) else 0.0 for ch in chains])
    mu = np.mean(means) if a.dataset_entropy_mean is None else a.dataset_entropy_mean
    sd = np.std(means) if a.dataset_entropy_std is None else a.dataset_entropy_std
    return a.trace_beta * (means - mu) / (sd + a.eps)


def _calibrate_per_gamma(rule: Ads, chains, cfg, masks, batches, z) -> tuple[list, dict]:
    """`_calibrate`, apart for each gamma the chains were given (a set drawn at several ratios, its
    ratio in the prompt: each ratio's chains must keep that ratio on average, and ADS overshoots
    low ratios more than high ones, so one common offset would not do)."""
    groups: dict[float, list[int]] = {}
    for i, ch in enumerate(chains):
        groups.setdefault(float(ch.gamma), []).append(i)
    if len(groups) == 1:
        return _calibrate(rule, batches, chains, cfg, masks)
    out, per = list(masks), {}
    shift = _trace_shift(chains, cfg.ads)
    for g, idx in sorted(groups.items()):
        sub = [chains[i] for i in idx]
        sub_batches = rule.prepare(sub, cfg, shift[idx])
        for bt in sub_batches:
            bt["z"] = z
        found, info = _calibrate(rule, sub_batches, sub, cfg, [masks[i] for i in idx])
        for i, m in zip(idx, found):
            out[i] = m
        per[f"{g:g}"] = info["calibration"]
    return out, {"calibration": {"per_gamma": per}}


def _calibrate(rule: Ads, batches, chains, cfg, masks) -> tuple[list, dict]:
    """The masks at the gamma offset (bisection in [-1, 1]) whose mean retained ratio is nearest
    the mean target gamma, and what was found."""
    a = cfg.ads
    target = float(np.mean([ch.gamma for ch in chains]))
    ratio = lambda ms: float(np.mean([m.mean() if m.size else 1.0 for m in ms]))  # noqa: E731
    lo, hi, best = -1.0, 1.0, (0.0, masks, ratio(masks))
    for _ in range(a.calibrate_iters):
        if abs(best[2] - target) <= a.calibrate_tol:
            break
        mid = 0.5 * (lo + hi)
        ms = rule.masks(batches, len(chains), cfg, mid, progress=False)
        r = ratio(ms)
        if abs(r - target) < abs(best[2] - target):
            best = (mid, ms, r)
        lo, hi = (lo, mid) if r > target else (mid, hi)
    info = {"calibration": {"gamma_offset": best[0], "uncalibrated_ratio": ratio(masks), "calibrated_ratio": best[2],
                            "target": target}}
    return best[1], info


__all__ = ["Ads", "Random", "Static", "TokenRule"]
