"""The generate stage: one trace record per question, written resumably (`write_traces`).

A trace record is `{"id", "question", "chain", "answer", "gold"?, "correct"?, "finish_reason",
"num_tokens"}`: the completion split by `jaxcot.text.answers.split_answer`; `correct` when a
grader and a gold answer are given. `jaxcot generate --data` and `jaxcot run` both call
`write_traces`.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping, Sequence

from jaxcot.config import check, check_choice, check_counts
from jaxcot.distributed import Share, part_path
from jaxcot.io import DataError, ResumableJsonl, read_jsonl
from jaxcot.provenance import Fingerprint, claimed, content_digest
from jaxcot.text.answers import split_answer
from jaxcot.text.grading import Grader
from jaxcot.text.prompts import PromptConfig, prompt_ids

SOURCES = ("model", "reference")
DTYPES = ("float32", "bfloat16")
QUANTIZE = (None, "int8")  # weight quantizations decoding can run (`jaxcot.models.quantize_int8`)


@dataclasses.dataclass
class GenerateConfig:
    """Settings of the generate stage (YAML: configs/generate.yaml; CLI flags override them).

    source: 'model' (the model writes the chains: the method) or 'reference' (the dataset's own
    worked solutions stand in for them; no model runs). Decoding: greedy at temperature 0, else
    sampling with top-k / top-p, each row from its own PRNG stream (`row_seed`); a row ends at
    EOS, a `stop` string or `max_new_tokens`. dtype: the weights' and compute dtype.
    save_token_stats adds each trace's token ids, log-probabilities and entropies.
    """

    source: str = "model"
    prompt: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    max_new_tokens: int = 512
    batch_size: int = 8
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = dataclasses.field(default_factory=list)
    dtype: str = "float32"
    min_bucket: int = 16
    save_token_stats: bool = False

    def __post_init__(self):
        check_choice(self, "source", SOURCES)
        check_choice(self, "dtype", DTYPES)
        check_counts(self, "max_new_tokens", "batch_size", "min_bucket")
        self.sampling()  # temperature, top_k and top_p: SamplingConfig checks them
        check(all(self.stop), "stop", "a stop string may not be empty")

    def sampling(self):
        from jaxcot.generate.sampling import SamplingConfig

        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


def row_seed(record_id: str) -> int:
    """A stable per-record seed (sampling does not depend on batching or on resuming)."""
    return zlib.crc32(record_id.encode("utf-8"))


def trace_record(item: dict, completion, cfg: GenerateConfig, grade: Grader | None = None) -> dict:
    """The trace record of one question's `Completion` (see the module docstring)."""
    text = completion.text.strip()
    chain, answer = split_answer(text)
    rec = {"id": item["id"], "question": item["question"], "chain": chain, "answer": answer}
    if "gold" in item:
        rec["gold"] = item["gold"]
        if grade is not None:
            rec["correct"] = bool(answer) and bool(grade(text, item["gold"]))
    rec["finish_reason"] = completion.finish_reason
    rec["num_tokens"] = len(completion.token_ids)
    if cfg.save_token_stats:
        rec["token_ids"] = completion.token_ids
        rec["logprobs"] = completion.logprobs
        rec["entropy"] = completion.entropy
    return rec


def reference_trace(item: dict) -> dict:
    """A dataset's own worked solution as a trace: testbed chains as they are; a benchmark's
    `solution` split at its answer (`split_answer`), else followed by "The answer is <gold>."."""
    if "chain" in item and "answer" in item:
        chain, answer = item["chain"], item["answer"]
    else:
        solution = (item.get("solution") or "").strip()
        if not solution:
            raise DataError(f"record {item.get('id')}: no reference solution to use as a chain")
        chain, answer = split_answer(solution)
        if not answer or not chain.strip():
            chain, answer = solution + "\n", f"The answer is {item['gold']}."
    return {"id": item["id"], "question": item["question"], "chain": chain, "answer": answer,
            "gold": item["gold"], "correct": True}


def traces_fingerprint(items: Sequence[dict], cfg: GenerateConfig, origin: Mapping[str, Any] = (),
                       inputs: Mapping[str, str] = ()) -> Fingerprint:
    """What a traces file written by `write_traces` from these arguments records as its origin."""
    return Fingerprint.of({"generate": cfg, "questions": content_digest(items), **dict(origin)}, inputs)


def write_traces(items: Sequence[dict], out: str, cfg: GenerateConfig, generator=None, *,
                 grade: Grader | None = None, origin: Mapping[str, Any] = (), inputs: Mapping[str, str] = (),
                 replace: bool = False, say=None, progress: bool = True, share: Share = Share()) -> list[dict]:
    """Write one trace per item of `items` ({id, question, gold?}) to `out` and return them all.

    Resumes an interrupted run (`ResumableJsonl`): only pending ids are generated. generator: a
    `Generator`, or a zero-argument callable returning one, called only when there is work (so a
    finished output loads no model); not needed for `source: reference`. grade(completion, gold)
    adds `correct`. The output's fingerprint (`jaxcot.provenance`) holds `cfg`, the questions,
    `origin` (further settings: the model's name, the grader's) and the contents of `inputs`
    ({name: file or folder}: the model); an output made otherwise is refused, or with `replace`
    made again (`say` is told why). share: this process's part of a multi-process run
    (`jaxcot.distributed`): only its batches are generated, into `part_path(out, share)`, and
    only they are returned.
    """
    from jaxcot.generate.api import ProgressBar

    fp = traces_fingerprint(items, cfg, origin, inputs)
    pad_to = None  # each item's planned prompt length (a share plans over the whole input)
    if share.count > 1:
        if cfg.source == "model":
            generator = generator() if callable(generator) else generator
        items, pad_to = _own_items(items, cfg, generator, share)
        out = part_path(out, share)
    with claimed(out, fp, replace=replace, say=say), ResumableJsonl(out, ids=[it["id"] for it in items]) as writer:
        todo = [it for it in items if it["id"] in set(writer.pending)]
        if cfg.source == "reference":
            for it in todo:
                writer.write(reference_trace(it))
        elif todo:
            gen = generator() if callable(generator) else generator
            if gen is None:
                raise ValueError("write_traces: source 'model' needs a generator")
            _generate(gen, todo, writer, cfg, grade, ProgressBar(len(items), initial=len(items) - len(todo),
                                                                 enabled=progress), pad_to)
    return read_jsonl(out)


def _own_items(items: Sequence[dict], cfg: GenerateConfig, gen, share: Share) -> tuple[list[dict], dict | None]:
    """The items of `share`'s batches, as the generator batches the whole of `items`, and {id:
    the prompt length its batch pads to} as planned over the whole of `items` (None: no model)."""
    from jaxcot.generate.api import length_batches

    if cfg.source != "model":
        return [items[i] for batch in share.take(length_batches([0] * len(items), cfg.batch_size)) for i in batch], None
    lengths = [len(prompt_ids(gen.tokenizer, it["question"], cfg.prompt)) for it in items]
    pad_to = gen.plan_pad_to(lengths, cfg.batch_size)
    own = [items[i] for batch in share.take(length_batches(lengths, cfg.batch_size)) for i in batch]
    return own, {items[i]["id"]: pad_to[i] for i in range(len(items))}


def _generate(gen, todo: list[dict], writer: ResumableJsonl, cfg: GenerateConfig, grade, bar,
              pad_to: dict | None = None) -> None:
    ids = [prompt_ids(gen.tokenizer, it["question"], cfg.prompt) for it in todo]

    def write(idx: list[int], completions) -> None:
        for i, c in zip(idx, completions):
            writer.write(trace_record(todo[i], c, cfg, grade))
        bar.update(completions)

    try:
        gen.generate_ids(ids, max_new_tokens=cfg.max_new_tokens, sampling=cfg.sampling(), stop=tuple(cfg.stop),
                         seed=cfg.seed, row_seeds=[row_seed(it["id"]) for it in todo], batch_size=cfg.batch_size,
                         on_batch=write, pad_to=None if pad_to is None else [pad_to[it["id"]] for it in todo])
    finally:
        bar.close()


def load_generator(model_path: str, cfg: GenerateConfig, tokenizer_path: str | None = None,
                   model=None, tokenizer=None, mesh=None, quantize: str | None = None):
    """A `Generator` for `cfg` (dtype, min_bucket), its batch sharded over the data axis of `mesh`
    (default: every device). model / tokenizer: already loaded ones to reuse instead of reading
    `model_path`. quantize: 'int8' for int8 weight-only decoding (see `Generator`)."""
    import jax.numpy as jnp

    from jaxcot.generate.api import Generator
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.sharding import make_mesh

    mesh = mesh if mesh is not None else make_mesh()
    if model is None:
        dtype = jnp.dtype(cfg.dtype)
        model = load_model(model_path, dtype=dtype, param_dtype=dtype, mesh=mesh)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_path or model_path)
    return Generator(model, tokenizer, mesh=mesh, min_bucket=cfg.min_bucket, quantize=quantize)


__all__ = ["DTYPES", "QUANTIZE", "SOURCES", "GenerateConfig", "load_generator", "reference_trace", "row_seed",
           "trace_record", "traces_fingerprint", "write_traces"]
