"""SFT input: (prompt, completion) examples -> chat-template tokens -> grain batches per process.

Pipeline (all deterministic from the seed, identical on every process):

1. `load_examples`: JSONL (``{"prompt": str | [messages], "completion": str}``) or a `datasets`
   source; a malformed line or a missing field is a `DataError` naming file and line.
2. `tokenize_examples`: the prompt is the user turn (or the given messages), the completion the
   assistant turn + end-of-turn, both through the tokenizer's chat template. Examples longer than
   `max_len` are dropped or truncated by an explicit rule; `SFTStats` counts every case.
3. `plan_rows`: a seeded shuffle per epoch, then one example per row (padded mode) or
   first-fit packing of several examples per row.
4. `batch_pipeline`: a `grain.MapDataset` of global batches; each process materialises only its
   own rows of each batch, padded to the batch's length bucket. Its iterator state is what the
   checkpoint stores.

Batch arrays (local rows r, micro-batches A, length L):
  tokens [A, r, L] int32, mask [A, r, L] bool (real tokens), positions [A, r, L] int32,
  segments [A, r, L] int32 (1.. per packed example, 0 = padding),
  loss_mask [A, r, L] bool (True where the token is a completion token, i.e. a prediction target).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Sequence

import grain
import numpy as np

from jaxcot.io import DataError, iter_jsonl
from jaxcot.shapes import bucket_grid, merge_lengths

OVERFLOW_RULES = ("drop", "truncate")


@dataclasses.dataclass(frozen=True)
class Example:
    """One tokenized example: ids [n] int32, the first `n_prompt` of them the prompt."""

    ids: np.ndarray
    n_prompt: int

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])


@dataclasses.dataclass
class SFTStats:
    """What tokenization kept, truncated and dropped (reported, never silent)."""

    examples: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_prompt_too_long: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_cut: int = 0
    rows: int = 0
    batches: int = 0
    rows_left_over: int = 0

    def summary(self) -> str:
        return (
            f"{self.examples} examples: {self.kept} kept ({self.truncated} truncated, "
            f"{self.completion_tokens_cut} completion tokens cut), {self.dropped_too_long} dropped as too long, "
            f"{self.dropped_prompt_too_long} dropped because the prompt alone fills max_len; "
            f"{self.prompt_tokens} prompt / {self.completion_tokens} completion tokens; "
            f"{self.rows} rows -> {self.batches} batches ({self.rows_left_over} rows left over)"
        )


# -- 1. examples ------------------------------------------------------------------------------


def _check_record(rec: dict, where: str, prompt_field: str, completion_field: str) -> tuple[Any, str]:
    prompt, completion = rec[prompt_field], rec[completion_field]
    if not isinstance(completion, str):
        raise DataError(f"{where}: field {completion_field!r} must be a string, got {type(completion).__name__}")
    if isinstance(prompt, str):
        return prompt, completion
    if isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt
    ):
        return [{"role": m["role"], "content": m["content"]} for m in prompt], completion
    raise DataError(
        f"{where}: field {prompt_field!r} must be a string or a non-empty list of "
        f"{{'role': str, 'content': str}} messages"
    )


def load_examples(
    path: str | os.PathLike,
    *,
    source: str = "jsonl",
    split: str = "train",
    name: str | None = None,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    limit: int | None = None,
) -> list[tuple[Any, str]]:
    """(prompt, completion) pairs from a JSONL file or a `datasets` source.

    source 'jsonl': `path` is a file. source 'datasets': `path` is a folder written by
    `Dataset.save_to_disk` or anything `datasets.load_dataset(path, name, split=split)` accepts
    (local builders and data files; nothing is downloaded here).
    """
    out: list[tuple[Any, str]] = []
    fields = (prompt_field, completion_field)
    if source == "jsonl":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such JSONL file")
        for lineno, rec in iter_jsonl(path, required=fields):
            out.append(_check_record(rec, f"{path}:{lineno}", *fields))
            if limit is not None and len(out) >= limit:
                break
    elif source == "datasets":
        ds = _load_datasets(os.fspath(path), split, name)
        missing = [f for f in fields if f not in ds.column_names]
        if missing:
            raise DataError(f"{path} (split {split!r}): no column {missing[0]!r}; columns: {ds.column_names}")
        for i, rec in enumerate(ds):
            if rec[completion_field] is None or rec[prompt_field] is None:
                raise DataError(f"{path} (split {split!r}) record {i}: field {completion_field!r} or "
                                f"{prompt_field!r} is null")
            out.append(_check_record(rec, f"{path} (split {split!r}) record {i}", *fields))
            if limit is not None and len(out) >= limit:
                break
    else:
        raise ValueError(f"unknown data source {source!r} (expected 'jsonl' or 'datasets')")
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def _load_datasets(path: str, split: str, name: str | None):
    import datasets

    if os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "state.json")) or os.path.exists(os.path.join(path, "dataset_dict.json"))
    ):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r}; splits: {list(ds)}")
            ds = ds[split]
        return ds
    return datasets.load_dataset(path, name, split=split)


# -- 2. tokenization --------------------------------------------------------------------------


def _messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_example(tokenizer, prompt, completion: str) -> tuple[str, str]:
    """(prompt text, completion text) through the chat template.

    The prompt text ends with the assistant header; the completion text is what the template
    renders for the assistant turn after it (the completion, the end-of-turn marker and whatever
    the template puts after it). Without a chat template: the raw prompt, completion + eos.
    """
    if getattr(tokenizer, "chat_template", None):
        msgs = _messages(prompt)
        p_text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        f_text = tokenizer.apply_chat_template(
            msgs + [{"role": "assistant", "content": completion}], tokenize=False
        )
        if not f_text.startswith(p_text):
            raise DataError(
                "the chat template does not render the prompt as a prefix of prompt + completion; "
                "cannot tell completion tokens from prompt tokens"
            )
        return p_text, f_text[len(p_text):]
    if not isinstance(prompt, str):
        raise DataError("chat messages need a tokenizer with a chat template")
    if tokenizer.eos_token is None:
        raise DataError("a tokenizer without chat template needs an eos token to end completions")
    return prompt, completion + tokenizer.eos_token


def tokenize_examples(
    tokenizer,
    examples: Sequence[tuple[Any, str]],
    *,
    max_len: int,
    overflow: str = "drop",
    progress: bool = False,
    chunk: int = 512,
) -> tuple[list[Example], SFTStats]:
    """Tokenize with the chat template and apply the overflow rule.

    overflow 'drop': an example longer than max_len is dropped. 'truncate': it keeps its first
    max_len tokens (the completion's tail is cut); when the prompt alone leaves no completion
    token, it is dropped. Every case is counted in the returned `SFTStats`.
    """
    if overflow not in OVERFLOW_RULES:
        raise ValueError(f"overflow must be one of {OVERFLOW_RULES}, got {overflow!r}")
    from jaxcot.logs import progress as progress_bar

    stats = SFTStats(examples=len(examples))
    out: list[Example] = []
    bar = progress_bar(len(examples), desc="tokenize", unit="ex", enabled=progress)
    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        texts = [render_example(tokenizer, p, c) for p, c in part]
        p_ids = tokenizer([t[0] for t in texts], add_special_tokens=False)["input_ids"]
        c_ids = tokenizer([t[1] for t in texts], add_special_tokens=False)["input_ids"]
        for pi, ci in zip(p_ids, c_ids):
            n_p, n_c = len(pi), len(ci)
            if n_p + n_c > max_len:
                if overflow == "drop":
                    stats.dropped_too_long += 1
                    continue
                if n_p >= max_len:
                    stats.dropped_prompt_too_long += 1
                    continue
                stats.truncated += 1
                stats.completion_tokens_cut += n_p + n_c - max_len
                ci = ci[: max_len - n_p]
            ids = np.asarray(list(pi) + list(ci), np.int32)
            out.append(Example(ids=ids, n_prompt=n_p))
            stats.kept += 1
            stats.prompt_tokens += n_p
            stats.completion_tokens += len(ci)
        bar.update(len(part))
    bar.close()
    if not out:
        raise DataError(f"no example fits max_len={max_len} ({stats.summary()})")
    return out, stats


# -- 3. rows ----------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Example indices [n] for one epoch: a permutation drawn from (seed, epoch) (numpy PCG64,
    the same on every platform and process)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def plan_rows(
    lengths: Sequence[int], *, epochs: int, seed: int, max_len: int, packing: bool,
    shuffle: bool = True, open_rows: int = 16,
) -> list[tuple[int, ...]]:
    """Rows of example indices over all epochs, in training order.

    Padded mode: one example per row. Packing: first-fit into rows of `max_len` tokens among the
    last `open_rows` open rows (a row is closed, in order, when it falls out of that window);
    rows never mix epochs.
    """
    rows: list[tuple[int, ...]] = []
    for epoch in range(epochs):
        order = epoch_order(len(lengths), seed, epoch, shuffle)
        if not packing:
            rows.extend((int(i),) for i in order)
            continue
        open_: list[tuple[list[int], int]] = []  # (indices, used length)
        for i in order:
            n = int(lengths[i])
            for j, (idx, used) in enumerate(open_):
                if used + n <= max_len:
                    idx.append(int(i))
                    open_[j] = (idx, used + n)
                    break
            else:
                open_.append(([int(i)], n))
                if len(open_) > open_rows:
                    rows.append(tuple(open_.pop(0)[0]))
        rows.extend(tuple(idx) for idx, _ in open_)
    return rows


def fit_bucket(n: int, buckets: Sequence[int]) -> int:
    """The shortest of `buckets` that holds a row of n tokens."""
    for b in sorted(buckets):
        if n <= b:
            return int(b)
    raise ValueError(f"row of {n} tokens exceeds the largest bucket {max(buckets)}")


def batch_longest(examples: Sequence[Example], batch_rows: Sequence[Sequence[int]]) -> int:
    """Tokens in the longest row of a batch (a row: example indices, several when packed)."""
    return max(sum(examples[i].length for i in row) for row in batch_rows)


def run_buckets(
    examples: Sequence[Example], rows: Sequence[tuple[int, ...]], batch_size: int, n_batches: int, *,
    max_len: int, steps: int, fit: bool = True,
) -> tuple[int, ...]:
    """The lengths the first `n_batches` global batches pad to.

    Without `fit`: the grid of `steps` lengths per octave up to max_len (`jaxcot.shapes`). With
    it: no more distinct lengths than that grid would give these batches (so no more compiled
    steps), chosen from a grid 4x finer with the fewest padded slots (`merge_lengths`); max_len
    stays a bucket, for batches past the first n_batches. The same number of compiled steps then
    pads fewer slots (docs/performance.md).
    """
    grid = bucket_grid(max_len, steps=steps)
    if not fit or n_batches <= 0:
        return grid
    longest = [batch_longest(examples, rows[k * batch_size:(k + 1) * batch_size]) for k in range(n_batches)]
    fine = bucket_grid(max_len, steps=4 * steps)
    shared = merge_lengths([fit_bucket(n, fine) for n in longest], len({fit_bucket(n, grid) for n in longest}))
    return tuple(sorted(set(shared.values()) | {int(max_len)}))


# -- 4. batches -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """How a global batch of `batch_size` rows splits into micro-batches and processes.

    Micro-batch a holds global rows [a*m, (a+1)*m), m = batch_size / grad_accum; process p of P
    feeds rows [p*m/P, (p+1)*m/P) of every micro-batch.
    """

    batch_size: int
    grad_accum: int = 1
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}")
        if self.micro % self.process_count:
            raise ValueError(
                f"micro-batch size {self.micro} (batch_size / grad_accum) is not a multiple of "
                f"the {self.process_count} processes"
            )

    @property
    def micro(self) -> int:
        return self.batch_size // self.grad_accum

    @property
    def local_micro(self) -> int:
        return self.micro // self.process_count

    def local_rows(self, batch_rows: Sequence) -> list[list]:
        """This process's rows of one global batch, grouped by micro-batch: [A][local_micro]."""
        lo = self.process_index * self.local_micro
        return [
            list(batch_rows[a * self.micro + lo: a * self.micro + lo + self.local_micro])
            for a in range(self.grad_accum)
        ]


def materialize(
    examples: Sequence[Example], rows: Sequence[Sequence[Sequence[int]]], length: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Arrays [A, r, length] for rows of example indices (see the module docstring)."""
    a, r = len(rows), len(rows[0])
    tokens = np.full((a, r, length), pad_id, np.int32)
    mask = np.zeros((a, r, length), bool)
    positions = np.zeros((a, r, length), np.int32)
    segments = np.zeros((a, r, length), np.int32)
    loss_mask = np.zeros((a, r, length), bool)
    for i in range(a):
        for j, row in enumerate(rows[i]):
            at = 0
            for s, idx in enumerate(row, 1):
                ex = examples[idx]
                n = ex.length
                sl = slice(at, at + n)
                tokens[i, j, sl] = ex.ids
                mask[i, j, sl] = True
                positions[i, j, sl] = np.arange(n)
                segments[i, j, sl] = s
                loss_mask[i, j, at + ex.n_prompt: at + n] = True
                at += n
    return dict(tokens=tokens, mask=mask, positions=positions, segments=segments, loss_mask=loss_mask)


class _Materialize(grain.transforms.Map):
    """grain map: a global batch of rows -> this process's padded arrays."""

    def __init__(self, examples, layout: BatchLayout, buckets, pad_id: int):
        self.examples, self.layout, self.buckets, self.pad_id = examples, layout, tuple(buckets), pad_id

    def map(self, batch_rows):
        length = fit_bucket(batch_longest(self.examples, batch_rows), self.buckets)
        return materialize(self.examples, self.layout.local_rows(batch_rows), length, self.pad_id)


def batch_pipeline(
    examples: Sequence[Example],
    rows: Sequence[tuple[int, ...]],
    layout: BatchLayout,
    *,
    buckets: Sequence[int],
    pad_id: int,
) -> grain.MapDataset:
    """A grain MapDataset: element k = this process's arrays of global batch k.

    Global batch k is rows [k*batch_size, (k+1)*batch_size); rows left over at the end are
    not used (`SFTStats.rows_left_over`). The bucket is chosen from the whole global batch, so
    every process pads to the same length.
    """
    n_batches = len(rows) // layout.batch_size
    if n_batches == 0:
        raise DataError(f"{len(rows)} rows make no batch of {layout.batch_size}")
    batches = [tuple(rows[k * layout.batch_size:(k + 1) * layout.batch_size]) for k in range(n_batches)]
    return grain.MapDataset.source(batches).map(_Materialize(examples, layout, buckets, pad_id))


def stats_with_rows(stats: SFTStats, n_rows: int, batch_size: int) -> SFTStats:
    return dataclasses.replace(
        stats, rows=n_rows, batches=n_rows // batch_size, rows_left_over=n_rows % batch_size
    )


def iter_texts(examples: Iterable[tuple[Any, str]]) -> Iterable[str]:
    """Every prompt and completion text (for building a word tokenizer from the data)."""
    for prompt, completion in examples:
        for m in _messages(prompt):
            yield m["content"]
        yield completion


__all__ = [
    "BatchLayout", "Example", "SFTStats", "batch_pipeline", "fit_bucket", "epoch_order", "run_buckets",
    "iter_texts", "load_examples", "materialize", "plan_rows", "render_example", "stats_with_rows",
    "tokenize_examples",
]
