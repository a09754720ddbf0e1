"""`jaxcot generate`: one prompt to stdout, or a dataset to a resumable traces JSONL."""

from __future__ import annotations

import dataclasses
import os
import sys

from jaxcot.config import load_config
from jaxcot.generate.records import GenerateConfig

_DTYPES = ("float32", "bfloat16")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate completions (one --prompt, or a --data set to --out traces.jsonl)",
        description="Generate with a model: `--prompt TEXT` prints one completion; `--data FILE --out "
        "traces.jsonl` writes one trace record per question, resuming an interrupted run.",
    )
    p.add_argument("--model", required=True, help="HF folder or .gguf file")
    p.add_argument("--tokenizer", help="tokenizer source (default: --model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="a user message; prints the completion")
    src.add_argument("--data", help="JSONL with a question field, a datasets folder/file, or hf:NAME[:CONFIG]")
    p.add_argument("--out", help="output traces JSONL (with --data)")
    p.add_argument("--config", help="YAML GenerateConfig (e.g. configs/generate.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop string, repeatable")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--dtype", choices=_DTYPES, help="compute and weight dtype")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if --out is complete")
    p.set_defaults(func=run)


def _config(args) -> GenerateConfig:
    cfg = load_config(GenerateConfig, args.config, args.set)
    flags = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop, limit=args.limit,
                 dtype=args.dtype)
    return dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})


def build_generator(model_path: str, tokenizer_path: str | None, cfg: GenerateConfig):
    """Load model + tokenizer (batch sharded over all devices on the data axis)."""
    import jax.numpy as jnp

    from jaxcot.generate.api import Generator
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.sharding import make_mesh

    if cfg.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {cfg.dtype!r}")
    dtype = jnp.dtype(cfg.dtype)
    mesh = make_mesh()
    model = load_model(model_path, dtype=dtype, param_dtype=dtype, mesh=mesh)
    tokenizer = load_tokenizer(tokenizer_path or model_path)
    return Generator(model, tokenizer, mesh=mesh, min_bucket=cfg.min_bucket)


def run(args) -> int:
    from jaxcot.generate.sampling import SamplingConfig

    cfg = _config(args)
    sampling = SamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    common = dict(max_new_tokens=cfg.max_new_tokens, sampling=sampling, stop=tuple(cfg.stop), seed=cfg.seed)
    if args.prompt is not None:
        if args.out:
            raise SystemExit("--out goes with --data, not --prompt")
        gen = build_generator(args.model, args.tokenizer, cfg)
        prompt = dataclasses.replace(cfg.prompt, template="{question}")
        (c,) = gen.generate([args.prompt], prompt=prompt, **common)
        print(c.text)
        return 0
    if not args.out:
        raise SystemExit("--data needs --out")
    return generate_dataset(args.model, args.tokenizer, args.data, args.out, cfg, overwrite=args.overwrite)


def generate_dataset(model_path: str, tokenizer_path: str | None, data: str, out: str, cfg: GenerateConfig,
                     *, overwrite: bool = False, generator=None) -> int:
    """Write one trace record per question of `data` to `out`, skipping records already written by
    an interrupted run (`out`.partial); the file appears at `out` atomically when all are done."""
    from jaxcot.generate.api import ProgressBar
    from jaxcot.generate.format import prompt_ids
    from jaxcot.generate.records import load_questions, row_seed, trace_record
    from jaxcot.generate.sampling import SamplingConfig
    from jaxcot.io import ResumableJsonl

    items = load_questions(data, cfg)
    if os.path.exists(out) and not os.path.exists(out + ".partial") and not overwrite:
        print(f"{out} is complete ({len(items)} questions); pass --overwrite to regenerate", file=sys.stderr)
        return 0
    writer = ResumableJsonl(out, key="id")
    todo = [it for it in items if it["id"] not in writer.done]
    if todo:
        gen = generator or build_generator(model_path, tokenizer_path, cfg)
        ids = [prompt_ids(gen.tokenizer, it["question"], cfg.prompt) for it in todo]
        bar = ProgressBar(len(items), initial=len(items) - len(todo))

        def write(idx, completions):
            for i, c in zip(idx, completions):
                writer.write(trace_record(todo[i], c, cfg))
            bar.update(completions)

        try:
            gen.generate_ids(
                ids,
                max_new_tokens=cfg.max_new_tokens,
                sampling=SamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p),
                stop=tuple(cfg.stop),
                seed=cfg.seed,
                row_seeds=[row_seed(it["id"]) for it in todo],
                batch_size=cfg.batch_size,
                on_batch=write,
            )
        finally:
            bar.close()
            writer.close()
    else:
        writer.close()
    writer.finish()
    print(f"wrote {out} ({len(items)} records)", file=sys.stderr)
    return 0


__all__ = ["register", "run", "generate_dataset", "build_generator"]
