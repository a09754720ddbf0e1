"""Compression rules, by name: the compress stage's plug-in point.

A rule decides, for each chain, which of its tokens the compressed chain keeps. It is an object
with

- ``needs(cfg) -> fields``: the `scores` fields it reads besides the importance (e.g. ADS reads
  ``entropy``); the stage checks every record has them;
- ``uses_gamma``: whether it compresses at a retention gamma (the stage then resolves each
  chain's gamma: `CompressConfig.gamma`, or TokenSkip's draw); otherwise every example records
  ``fixed_gamma``;
- ``decide(chains, cfg) -> (decisions, info)``: one `Decision` per `Chain` (its keep mask, and
  optionally its own text and example fields), and entries for the summary (e.g. ADS's
  ``{"calibration": {...}}``);
- optionally ``summary(decisions) -> dict``: further summary entries.

Built in: ``ads`` (Adaptive GoGI-Skip's rule), ``static`` (TokenSkip's ratio), ``random`` (the
static ratio over uniform scores), ``step`` (step-entropy pruning) and ``original`` (keep all).
A rule of your own is named as ``package.module:attribute`` (``rule:`` in a method's knobs),
or registered with ``RULES.register(name, rule)``; a plain function ``keep(chain, cfg) -> bool
[C]`` is a rule too (`PerChain`). No jax at import: a config checks names without a backend.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from jaxcot.registry import Registry


@dataclasses.dataclass(frozen=True)
class Chain:
    """What a rule sees of one record: id; pieces [C] (the chain's tokens as text);
    importance float32 [C] (the method's importance, None for rules that use none); scores: the
    record's per-token fields, float32 [C] each; gamma: the retention asked for (None when the
    rule uses none); record: the whole scored record; where: its label for errors."""

    id: str
    pieces: Sequence[str]
    importance: np.ndarray | None
    scores: Mapping[str, np.ndarray]
    gamma: float | None
    record: Mapping[str, Any]
    where: str

    def __len__(self) -> int:
        return len(self.pieces)


@dataclasses.dataclass
class Decision:
    """A rule's verdict on one chain: keep [C] bool; text: the compressed chain when the rule
    writes its own (None: the kept pieces, joined); fields: extra fields of the SFT example;
    detail: anything further the rule tells a caller (not written)."""

    keep: np.ndarray
    text: str | None = None
    fields: dict = dataclasses.field(default_factory=dict)
    detail: Any = None


class Rule(Protocol):
    uses_gamma: bool
    fixed_gamma: float | None

    def needs(self, cfg) -> Sequence[str]: ...

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]: ...


@dataclasses.dataclass(frozen=True)
class PerChain:
    """A rule from a plain function ``keep(chain: Chain, cfg) -> bool [C]``, applied chain by
    chain; ``needs``: the score fields it reads."""

    keep: Callable[[Chain, Any], Any]
    needs_fields: tuple[str, ...] = ()
    uses_gamma: bool = True
    fixed_gamma: float | None = None

    def needs(self, cfg) -> Sequence[str]:
        return self.needs_fields

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]:
        out = []
        for ch in chains:
            keep = np.asarray(self.keep(ch, cfg))
            if keep.shape != (len(ch),) or keep.dtype != np.bool_:
                raise ValueError(f"{ch.where}: rule {getattr(self.keep, '__name__', self.keep)!r} returned a keep "
                                 f"mask of {keep.dtype} {keep.shape}; the chain has {len(ch)} tokens (bool [C])")
            out.append(Decision(keep))
        return out, {}


class Original:
    """Keep every token: the uncompressed control."""

    uses_gamma = False
    fixed_gamma = 1.0

    def needs(self, cfg) -> Sequence[str]:
        return ()

    def decide(self, chains: Sequence[Chain], cfg) -> tuple[list[Decision], dict]:
        return [Decision(np.ones(len(ch), bool)) for ch in chains], {}


def as_rule(entry) -> Rule:
    """A registry entry as a `Rule`: a rule object as is, a rule class instantiated, a plain
    function wrapped in `PerChain`."""
    if isinstance(entry, type):
        entry = entry()
    if hasattr(entry, "decide"):
        return entry
    if callable(entry):
        return PerChain(entry)
    raise ValueError(f"{entry!r} is not a rule: give an object with needs/decide or a function keep(chain, cfg)")


RULES: Registry[Rule] = Registry("rule")
RULES.register("original", Original())
RULES.register("static", "jaxcot.compress.token_rules:Static")
RULES.register("random", "jaxcot.compress.token_rules:Random")
RULES.register("ads", "jaxcot.compress.token_rules:Ads")
RULES.register("step", "jaxcot.compress.step_rule:StepEntropy")


def get_rule(spec: str) -> Rule:
    """The rule `spec` names (`RULES` name or 'package.module:attribute')."""
    return as_rule(RULES.get(spec))


__all__ = ["RULES", "Chain", "Decision", "Original", "PerChain", "Rule", "as_rule", "get_rule"]
