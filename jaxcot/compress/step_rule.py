"""Step-entropy pruning (arXiv 2508.03346) as a rule: the chain split into steps, the share
`step.kappa` of content steps with the lowest entropy (sum or mean over the step's tokens)
replaced by `step.skip_marker`, the first and last steps protected as configured."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxcot.compress import rebuild, rules
from jaxcot.compress.registry import Chain, Decision
from jaxcot.shapes import bucket_length, length_sorted_batches, pad_rows


def _eligible(steps, first: int, last: int) -> list[int]:
    content = [k for k, st in enumerate(steps) if st.has_content]
    return content[first:max(first, len(content) - last)]


class StepEntropy:
    """Keep mask [C]: the tokens of kept steps; the example records kappa and the steps pruned."""

    uses_gamma = False
    fixed_gamma = None

    def needs(self, cfg) -> Sequence[str]:
        return ("entropy",)

    def pruned(self, chains: Sequence[Chain], cfg) -> list[tuple[np.ndarray, list, np.ndarray]]:
        """(step id per token [C], steps, pruned [S] bool) per chain, batched by length."""
        st = cfg.step
        split = [rebuild.split_steps(ch.pieces, st.step_pattern) for ch in chains]
        lengths = [len(ch) for ch in chains]
        out: list = [None] * len(chains)
        for idx in length_sorted_batches(lengths, cfg.batch_size):
            b, c = bucket_length(len(idx), 1), bucket_length(max(lengths[i] for i in idx), 16)
            s = bucket_length(max(len(split[i][1]) for i in idx), 8)
            valid = pad_rows([np.ones(lengths[i], bool) for i in idx], (b, c), bool, False)
            ids = pad_rows([split[i][0] for i in idx], (b, c), np.int32)
            entropy = pad_rows([chains[i].scores["entropy"] for i in idx], (b, c), np.float32)
            eligible = np.zeros((b, s), bool)
            for j, i in enumerate(idx):
                eligible[j, _eligible(split[i][1], st.protect_first_steps, st.protect_last_steps)] = True
            sc = rules.step_scores(entropy, ids, valid, num_steps=s, agg=st.step_agg)
            prune = np.asarray(rules.lowest_steps(sc, eligible, st.kappa))
            for j, i in enumerate(idx):
                out[i] = (split[i][0], split[i][1], prune[j, : len(split[i][1])].copy())
        return out

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]:
        out = []
        for ch, (ids, steps, prune) in zip(chains, self.pruned(chains, cfg)):
            text = rebuild.rebuild_steps(ch.record["chain"], steps, prune, marker=cfg.step.skip_marker)
            keep = ~prune[ids] if len(ids) else np.zeros(0, bool)
            fields = {"kappa": float(cfg.step.kappa), "steps_pruned": int(prune.sum()), "steps": int(prune.size)}
            out.append(Decision(keep, text, fields, detail=prune))
        return out, {}

    def summary(self, decisions: Sequence[Decision]) -> dict:
        return {"steps": {"total": sum(d.fields["steps"] for d in decisions),
                          "pruned": sum(d.fields["steps_pruned"] for d in decisions)}}


__all__ = ["StepEntropy"]
