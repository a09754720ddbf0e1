"""The Python API: a `Generator` turns prompts (text or token ids) into `Completion`s.

    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.generate import Generator
    gen = Generator(load_model(path), load_tokenizer(path))
    [c.text for c in gen.generate(["What is the capital of France?"], max_new_tokens=64)]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
from jax.sharding import Mesh

from jaxcot.generate.config import OVERFLOW, EngineConfig
from jaxcot.generate.sampler import EOS, FINISH_REASONS, PROMPT_BUCKET_STEPS, DecodeSpec, Sampler
from jaxcot.generate.sampling import SamplingConfig
from jaxcot.generate.stop import StopPatterns, stop_patterns, trim_at_stop
from jaxcot.logs import get_logger
from jaxcot.models.decoder import Decoder
from jaxcot.programs import ProgramCache
from jaxcot.shapes import bucket_length, length_sorted_batches, merge_lengths
from jaxcot.text.prompts import PromptConfig, prompt_ids


@dataclasses.dataclass
class Completion:
    """One generated continuation. token_ids / logprobs / entropy have one entry per generated
    token, the EOS or stop-completing token included; `text` excludes EOS and the stop string.
    logprobs: log p(token | prefix) under the model (temperature 1, unfiltered); entropy: the
    predictive entropy over the full vocabulary in nats. finish_reason: 'eos', 'stop', 'length' or
    'early' (an early exit took a trial answer). From the continuous engine (`EngineConfig`):
    cache_peak, the most KV-cache slots the prompt's row held (prompt + chain); exit_at, where a
    committed early exit's answer marker starts in token_ids (None: it ran to its end)."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    entropy: list[float]
    finish_reason: str
    prompt_ids: list[int]
    cache_peak: int | None = None
    exit_at: int | None = None


def default_eos_ids(model: Decoder, tokenizer) -> tuple[int, ...]:
    """The model config's EOS ids plus the tokenizer's eos token (the chat end-of-turn token)."""
    ids = list(model.config.eos_ids)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(dict.fromkeys(ids))


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches `Generator.generate_ids` runs: prompt indices shortest first (ties in input
    order), `batch_size` consecutive ones per batch. A set of whole batches, run again, forms the
    same batches (the multi-process share of a stage relies on it): `length_sorted_batches`,
    as lists of ints."""
    return [b.tolist() for b in length_sorted_batches(lengths, batch_size)]


def shared_prompt_lengths(batch_longest: Sequence[int], min_bucket: int = 16,
                          batches_per_program: int = 8) -> list[int | None]:
    """The prompt length each batch pads to, so that a few compiled programs serve them all.

    batch_longest [N]: each batch's longest prompt, in run order (ascending, as `length_batches`
    makes them). A program costs seconds to compile (or to trace and load from the cache) and
    serves every batch of its prompt length, so the N batches get at most ceil(N /
    batches_per_program) lengths: consecutive buckets merge upwards, choosing the merge with the
    fewest padded prompt slots. Returns None for every batch when no merge is needed (each takes
    its own bucket, packed when that pays), else each batch's shared length (`merge_lengths`).
    """
    buckets = [bucket_length(n, min_bucket, PROMPT_BUCKET_STEPS) for n in batch_longest]
    groups = max(1, -(-len(buckets) // max(batches_per_program, 1)))
    if len(set(buckets)) <= groups:
        return [None] * len(buckets)
    shared = merge_lengths(buckets, groups)
    return [shared[b] for b in buckets]


def fit_context(prompts: Sequence[Sequence[int]], max_new_tokens: int, context: int,
                overflow: str = "refuse") -> tuple[list[Sequence[int]], int]:
    """(prompts, how many were cut): every prompt with `max_new_tokens` must fit the model's
    `context` positions. A longer one is an error naming it ('refuse'), or keeps its last
    context - max_new_tokens tokens ('truncate': the question's end and the turn that asks for
    the answer survive). max_new_tokens alone filling the context is always an error."""
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    room = context - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} fills the model's context of {context} positions: "
                         "lower max_new_tokens")
    long = [i for i, p in enumerate(prompts) if len(p) > room]
    if long and overflow == "refuse":
        i = long[0]
        raise ValueError(f"prompt {i} has {len(prompts[i])} tokens: with max_new_tokens {max_new_tokens} it does not "
                         f"fit the model's context of {context} positions ({len(long)} prompts too long); shorten "
                         f"it, lower max_new_tokens, or set overflow=truncate (keeps its last {room} tokens)")
    return [p[len(p) - room:] if len(p) > room else p for p in prompts], len(long)


class Generator:
    """Batched generation for a model and its tokenizer.

    mesh: batch rows are sharded over its (data, fsdp) axes; eos_ids: token ids that end a row
    (default `default_eos_ids`); cache_dtype: KV cache dtype (default the model's compute dtype);
    min_bucket: the smallest padded prompt length (prompt lengths are padded to 2^k or 1.5 * 2^k);
    pack, decode_phases, fuse_weights, programs: see `Sampler` (packed prefill of mixed prompt
    lengths; a KV cache grown in phases; fused [out, in] projections, by default on CPU; a
    `ProgramCache` of compiled programs shared across generators of one architecture);
    batches_per_program: the batches of one call share prompt lengths so that each program serves
    about this many (`shared_prompt_lengths`); quantize: 'int8' decodes with int8 weight-only projections
    (`Sampler`, `jaxcot.models.quantize_int8`); engine: how the decode loop runs (`EngineConfig`:
    the static loop by default; continuous batching, early exit and KV eviction in
    `jaxcot.generate.engine`).
    """

    def __init__(
        self,
        model: Decoder,
        tokenizer=None,
        *,
        mesh: Mesh | None = None,
        eos_ids: Sequence[int] | None = None,
        cache_dtype=None,
        min_bucket: int = 16,
        pack: bool = True,
        decode_phases: int = 4,
        fuse_weights: bool | None = None,
        programs: ProgramCache | None = None,
        batches_per_program: int = 8,
        quantize: str | None = None,
        engine: EngineConfig | None = None,
    ):
        self.tokenizer = tokenizer
        self.engine = engine if engine is not None else EngineConfig()
        self.batches_per_program = batches_per_program
        self.sampler = Sampler(model, mesh=mesh, cache_dtype=cache_dtype, min_bucket=min_bucket, pack=pack,
                               decode_phases=decode_phases, fuse_weights=fuse_weights, programs=programs,
                               quantize=quantize)
        self.eos_ids = tuple(int(i) for i in (eos_ids if eos_ids is not None else default_eos_ids(model, tokenizer)))
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        self.pad_id = int(pad if pad is not None else (model.config.pad_token_id or 0))

    @property
    def compile_seconds(self) -> float:
        return self.sampler.compile_seconds

    def plan_pad_to(self, lengths: Sequence[int], batch_size: int) -> list[int | None]:
        """Per prompt (lengths [N]), the prompt length its batch pads to (`shared_prompt_lengths`
        over the `length_batches` of these prompts; None: the batch's own)."""
        batches = length_batches(lengths, batch_size)
        shared = shared_prompt_lengths([max(lengths[i] for i in b) for b in batches], self.sampler.min_bucket,
                                       self.batches_per_program)
        out: list[int | None] = [None] * len(lengths)
        for b, n in zip(batches, shared):
            for i in b:
                out[i] = n
        return out

    def _decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 256,
        sampling: SamplingConfig = SamplingConfig(),
        stop: Sequence[str] = (),
        seed: int = 0,
        row_seeds: Sequence[int] | None = None,
        batch_size: int | None = None,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
        pad_to: Sequence[int | None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        overflow: str = "refuse",
    ) -> list[Completion]:
        """Generate for token-id prompts, in batches of `batch_size` (default: all at once).

        Prompts are grouped by length (less padding); results come back in input order and do not
        depend on the grouping: row i samples from its own stream, `row_seeds[i]` (default i).
        `on_batch(indices, completions)` is called after each batch (progress, streaming output).
        pad_to [len(prompts)]: the prompt length of each prompt's batch (`plan_pad_to` over a
        larger input of which these prompts are whole batches); default: planned over these.
        on_progress(tokens, budget): told during each batch, that batch's totals so far (see
        `Sampler.run_batch`; a `ProgressBar`'s `on_progress`); it makes the decode run in chunks.
        overflow: a prompt that with `max_new_tokens` does not fit the model's context is refused
        ('refuse') or loses its first tokens ('truncate', logged); see `fit_context`.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        prompts, cut = fit_context(prompts, max_new_tokens, self.sampler.config.max_position_embeddings, overflow)
        if cut:
            get_logger("generate").warning(f"{cut} of {len(prompts)} prompts lost their first tokens to fit the "
                                           f"model's context with max_new_tokens {max_new_tokens}")
        stop = tuple(stop)
        if stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer")
        spec = DecodeSpec(
            max_new_tokens=int(max_new_tokens),
            sampling=sampling,
            eos_ids=self.eos_ids,
            stop=stop_patterns(self.tokenizer, stop) if stop else StopPatterns(),
            pad_id=self.pad_id,
        )
        seeds = np.arange(len(prompts)) if row_seeds is None else np.asarray(row_seeds)
        if self.engine.continuous:
            return self._generate_continuous(prompts, spec, seed, seeds, stop, on_batch)
        bs = batch_size or max(len(prompts), 1)
        results: list[Completion | None] = [None] * len(prompts)
        pad_to = self.plan_pad_to([len(p) for p in prompts], bs) if pad_to is None else pad_to
        for idx in length_batches([len(p) for p in prompts], bs):
            out = self.sampler.run_batch([prompts[i] for i in idx], spec, seed=seed, row_seeds=seeds[idx],
                                         batch_size=bs, pad_to=pad_to[idx[0]], on_progress=on_progress)
            done = []
            for r, i in enumerate(idx):
                results[i] = self._completion(prompts[i], out, r, stop)
                done.append(results[i])
            if on_batch is not None:
                on_batch(idx, done)
        return results  # type: ignore[return-value]

    def _generate_continuous(self, prompts, spec: DecodeSpec, seed: int, seeds, stop, on_batch) -> list[Completion]:
        """`generate_ids` through the continuous engine: `engine.slots` rows at once, the prompts
        in queues of `engine.queue` (0: one), on_batch told after each queue."""
        from jaxcot.generate.engine import SlotEngine, engine_spec

        size = min(self.engine.queue or len(prompts), len(prompts))
        # Never more slots than prompts in a queue (a batch-1 call decodes one row, not `slots`).
        engine = dataclasses.replace(self.engine, slots=min(self.engine.slots, size))
        espec = engine_spec(engine, spec, self.tokenizer, self.sampler.batch_multiple)
        results: list[Completion] = []
        for lo in range(0, len(prompts), size):
            idx = list(range(lo, min(lo + size, len(prompts))))
            out = SlotEngine(self.sampler).run([prompts[i] for i in idx], espec, seed=seed, row_seeds=seeds[idx])
            done = []
            for r, i in enumerate(idx):
                c = self._completion(prompts[i], out, r, stop)
                exit_at = int(out.exit_at[r])
                exit_at = exit_at if 0 <= exit_at < len(c.token_ids) else None
                done.append(dataclasses.replace(c, cache_peak=int(out.peak[r]), exit_at=exit_at))
            results.extend(done)
            if on_batch is not None:
                on_batch(idx, done)
        return results

    def _completion(self, prompt, out, r: int, stop: tuple[str, ...]) -> Completion:
        n = int(out.lengths[r])
        reason = FINISH_REASONS[int(out.reason[r])]
        ids = out.tokens[r, :n].tolist()
        text_ids = ids[:-1] if out.reason[r] == EOS else ids
        text = self._decode(text_ids)
        trimmed = trim_at_stop(text_ids, self._decode, stop) if stop else None
        if trimmed is not None:  # exact cut (the compiled check may have missed a tokenization)
            n, text = trimmed
            ids, reason = ids[:n], "stop"
        return Completion(
            text=text,
            token_ids=ids,
            logprobs=out.logprobs[r, :n].tolist(),
            entropy=out.entropy[r, :n].tolist(),
            finish_reason=reason,
            prompt_ids=list(prompt),
        )

    def generate(
        self,
        prompts: Sequence[str],
        *,
        prompt: PromptConfig = PromptConfig(template="{question}"),
        progress: bool = False,
        **kw,
    ) -> list[Completion]:
        """Generate for text prompts, each formatted by `prompt` (default: the text as the user turn
        of the chat template). Other keywords as in `generate_ids`."""
        if self.tokenizer is None:
            raise ValueError("text prompts need a tokenizer")
        ids = [prompt_ids(self.tokenizer, p, prompt) for p in prompts]
        if not progress:
            return self.generate_ids(ids, **kw)
        bar = ProgressBar(len(ids), kw.get("max_new_tokens", 256))
        try:
            return self.generate_ids(ids, on_batch=lambda idx, done: bar.update(done), on_progress=bar.listener,
                                     **kw)
        finally:
            bar.close()


class ProgressBar:
    """A bar over the decode budget of `total` records of up to `max_new_tokens` tokens each: it
    moves while a batch decodes (`on_progress`, told by the sampler between chunks) and each row
    counts its tokens, then its whole budget once it ends; the postfix gives records done and the
    generated tokens/s. Shown only where someone watches (`jaxcot.logs.progress`); `listener` is
    None otherwise, so that an unwatched generation runs its one fused program."""

    def __init__(self, total: int, max_new_tokens: int, initial: int = 0, desc: str = "generate",
                 enabled: bool = True):
        from jaxcot.logs import progress

        self.budget = int(max_new_tokens)
        self.bar = progress(total * self.budget, initial=initial * self.budget, desc=desc, unit="tok",
                            enabled=enabled, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
                            "{postfix}")
        self.total, self.records = total, initial
        self.start = time.perf_counter()
        self.tokens = 0  # generated by the finished batches
        self._batch = (0, 0)  # the running batch's (tokens, budget) so far

    @property
    def listener(self) -> Callable[[int, int], None] | None:
        """`on_progress` for `Generator.generate_ids`, or None when the bar is not shown."""
        return None if self.bar.disable else self.on_progress

    def on_progress(self, tokens: int, budget: int) -> None:
        """The running batch's totals so far (`jaxcot.generate.sampler.progress_stats`)."""
        moved = budget - self._batch[1]
        self._batch = (tokens, budget)
        self._postfix()
        self.bar.update(moved)  # (redraws, with the postfix, at tqdm's pace)

    def update(self, completions: Sequence[Completion]) -> None:
        """A batch finished with these completions."""
        moved = len(completions) * self.budget - self._batch[1]
        self._batch = (0, 0)
        self.tokens += sum(len(c.token_ids) for c in completions)
        self.records += len(completions)
        self._postfix()
        self.bar.update(moved)

    def _postfix(self) -> None:
        rate = (self.tokens + self._batch[0]) / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.records}/{self.total} records, {rate:.1f} tok/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


__all__ = ["OVERFLOW", "Completion", "Generator", "ProgressBar", "default_eos_ids", "fit_context", "length_batches",
           "shared_prompt_lengths"]
