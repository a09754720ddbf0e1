"""Per-token importance scorers, by name: the score stage's plug-in point.

A scorer is a callable ``scorer(batch: ScoreBatch) -> {field: [scores [n_i] per trace]}``: for
each trace of the batch (in `batch.records` order), one float array over its n_i chain tokens per
field it writes. The stage runs the scorers `ScoreConfig.scorers` names, in that order, on every
length-bucketed batch, and stores each field in the scored record's ``scores``. Built in:

| name      | field(s)    | what it is                                                            |
|-----------|-------------|-----------------------------------------------------------------------|
| gogi      | gogi        | the goal-gradient norm at the configured layer(s) (docs/method.md)    |
| entropy   | entropy     | predictive entropy of the next token, nats (a by-product of the pass) |
| self_info | self_info   | -log p(x_t given x_<t) (a by-product of the pass)                     |
| random    | random      | uniform [0, 1), keyed by (seed 0, record id): `random_scores`         |
| llmlingua | llmlingua   | LLMLingua-2's keep probability (`ScoreConfig.llmlingua` folder)      |
| grad_x_act | grad_x_act | gradient x activation at GoGI's layer(s)                              |
| integrated_gradients | integrated_gradients | from h^l = 0 to h^l, `options.integrated_gradients.steps` (16) |
| attention | attention   | the attention the answer pays each token, over heads and layers       |
| counterfactual | counterfactual | answer-loss rise when the token's h^l is zeroed (exact)        |
| reference | reference   | log p under the model minus under `options.reference.model` (CTS)     |

gogi, entropy and self_info share one forward and backward per batch (`ScoreBatch.gogi`). A
scorer of your own is named as ``package.module:function`` in the config, or registered with
``SCORERS.register(name, fn)``; the testbed's ground truth is one (``jaxcot.testbed.roles:
oracle_scorer``). Nothing here imports jax at import time: a config checks names without a backend.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxcot.registry import Registry

TraceFields = Mapping[str, Sequence[np.ndarray]]


@dataclasses.dataclass
class ScoreBatch:
    """What a scorer sees of one batch.

    records [R]: the trace records; encoded [R]: their `EncodedTrace`s (token ids, chain and
    answer spans, chain pieces); arrays: the padded batch (`jaxcot.importance.batching.Batch`:
    tokens [rows, T] int32, masks [rows, T] bool; row r is records[r], later rows are filler);
    model, tokenizer: the scored model; cfg: the `ScoreConfig`; mesh: where the batch runs;
    session: a dict kept across the stage's batches (e.g. a side model a scorer loads once).
    """

    records: list[dict[str, Any]]
    encoded: list[Any]
    arrays: Any
    model: Any
    tokenizer: Any
    cfg: Any
    mesh: Any
    session: dict
    gogi_pass: Callable[[], list[Any]]

    @functools.cached_property
    def gogi(self) -> list[Any]:
        """The GoGI pass over the batch, once however many scorers ask: one
        `jaxcot.importance.score.TraceScores` per record (gogi, entropy, self_info [n_i])."""
        return self.gogi_pass()

    def pieces(self, r: int) -> tuple[str, ...]:
        """Record r's chain tokens as text."""
        return self.encoded[r].pieces


Scorer = Callable[[ScoreBatch], TraceFields]
SCORERS: Registry[Scorer] = Registry("scorer")
DEFAULT_SCORERS = ("gogi", "entropy", "self_info")
# The built-in model scorers live in `builtin_scorers` (they need jax and the model code), imported
# when a stage first runs one.
SCORERS.register("gogi", "jaxcot.importance.builtin_scorers:gogi_scorer")
SCORERS.register("entropy", "jaxcot.importance.builtin_scorers:entropy_scorer")
SCORERS.register("self_info", "jaxcot.importance.builtin_scorers:self_info_scorer")
SCORERS.register("llmlingua", "jaxcot.importance.builtin_scorers:llmlingua_scorer")
SCORERS.register("grad_x_act", "jaxcot.importance.builtin_scorers:grad_x_act_scorer")
SCORERS.register("integrated_gradients", "jaxcot.importance.builtin_scorers:integrated_gradients_scorer")
SCORERS.register("attention", "jaxcot.importance.builtin_scorers:attention_scorer")
SCORERS.register("counterfactual", "jaxcot.importance.builtin_scorers:counterfactual_scorer")
SCORERS.register("reference", "jaxcot.importance.builtin_scorers:reference_scorer")
# The keys of a scored record's ``scores`` that hold its settings and chain, not a scorer's field.
NOT_SCORES = ("layer", "norm", "goal", "vocab_size", "token_ids", "pieces")


@functools.lru_cache(maxsize=None)
def _uniform_program():
    import jax

    @functools.partial(jax.jit, static_argnums=2)
    def uniform(seed, crc, length):
        key = jax.random.fold_in(jax.random.key(seed), crc)
        return jax.random.uniform(key, (length,), jax.numpy.float32)

    return uniform


def random_key(key: str) -> int:
    """The per-record stream of `random_scores`: crc32 of the record id."""
    return zlib.crc32(str(key).encode("utf-8"))


def random_scores(n: int, seed: int, key: str = "") -> np.ndarray:
    """Uniform [0, 1) scores [n] for record `key`: threefry uniforms from
    ``fold_in(key(seed), crc32(key))``, the same on every machine and for every padding (a longer
    draw begins with a shorter one), so the compress stage's batched draw
    (`jaxcot.compress.rules.random_scores`) gives these numbers. The one random importance."""
    length = max(16, 1 << max(0, (n - 1).bit_length()))
    out = _uniform_program()(np.uint32(seed & 0xFFFFFFFF), np.uint32(random_key(key)), length)
    return np.asarray(out[:n])


@SCORERS.register("random")
def random_scorer(batch: ScoreBatch) -> TraceFields:
    return {"random": [random_scores(len(e.pieces), 0, rec["id"]) for e, rec in zip(batch.encoded, batch.records)]}


def run_scorers(names: Sequence[str], batch: ScoreBatch) -> list[dict[str, np.ndarray]]:
    """Every scorer in `names` on `batch`: per record, {field: float32 [n_i]}, fields in the
    order the scorers return them. A scorer that returns the wrong number of traces or tokens,
    or a non-finite score, is an error naming it, the field and the record."""
    out: list[dict[str, np.ndarray]] = [{} for _ in batch.records]
    for name in names:
        fields = SCORERS.get(name)(batch)
        for field, per_trace in fields.items():
            if len(per_trace) != len(batch.records):
                raise ValueError(f"scorer {name!r}: field {field!r} has {len(per_trace)} traces, "
                                 f"the batch has {len(batch.records)}")
            for r, values in enumerate(per_trace):
                out[r][field] = _checked(values, name, field, batch.records[r], len(batch.encoded[r].pieces))
    return out


def _checked(values, name: str, field: str, record: dict, n: int) -> np.ndarray:
    arr = np.asarray(values, np.float32)
    where = f"scorer {name!r}, record {record.get('id')!r}: field {field!r}"
    if arr.shape != (n,):
        raise ValueError(f"{where} has shape {arr.shape}; the chain has {n} tokens")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where} is not finite at token {int(np.argmin(np.isfinite(arr)))}")
    return arr


__all__ = ["DEFAULT_SCORERS", "NOT_SCORES", "SCORERS", "ScoreBatch", "Scorer", "TraceFields", "random_key",
           "random_scores", "run_scorers"]
