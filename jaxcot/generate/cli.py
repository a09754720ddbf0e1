"""`jaxcot generate`: `--prompt TEXT` prints one completion; `--data FILE --out traces.jsonl` writes
one trace record per question (`write_traces`), resuming an interrupted run."""

from __future__ import annotations

import dataclasses
import sys

from jaxcot.config import HelpFormatter, load_config
from jaxcot.data.questions import QuestionFields
from jaxcot.generate.traces import DTYPES, QUANTIZE, GenerateConfig
from jaxcot.models.loading import add_model_arguments


def register(subparsers) -> None:
    g = GenerateConfig()
    p = subparsers.add_parser("generate", description=__doc__, formatter_class=HelpFormatter,
                              help="generate completions (one --prompt, or a --data set to --out traces.jsonl)")
    add_model_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="a user message; prints the completion")
    src.add_argument("--data", help="JSONL with a question field, a datasets folder/file, or hf:NAME[:CONFIG]")
    p.add_argument("--out", help="output traces JSONL (with --data)")
    p.add_argument("--config", help="YAML GenerateConfig (e.g. configs/generate.yaml); flags override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--batch-size", type=int, help=f"rows per batch (config default {g.batch_size})")
    p.add_argument("--max-new-tokens", type=int, help=f"tokens generated at most (config default {g.max_new_tokens})")
    p.add_argument("--temperature", type=float, help="0 = greedy (config default 0)")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest tokens; 0 = all (config default 0)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass (config default 1.0)")
    p.add_argument("--seed", type=int, help="sampling seed; each row has its own stream (config default 0)")
    p.add_argument("--stop", action="append", help="stop string, repeatable (config default none)")
    p.add_argument("--dtype", choices=DTYPES, help="compute and weight dtype (config default float32)")
    p.add_argument("--quantize", choices=[q for q in QUANTIZE if q],
                   help="int8 weight-only projections for decoding (saves memory; on CPU not time)")
    q = QuestionFields()
    p.add_argument("--question-field", default=q.question_field, help="the records' question field")
    p.add_argument("--answer-field", default=q.answer_field, help="the records' reference answer field (gives gold)")
    p.add_argument("--id-field", default=q.id_field, help="the records' id field (default: id, idx, else position)")
    p.add_argument("--split", default=q.split, help="split of a datasets source")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if --out is complete")
    p.set_defaults(func=run)


def _config(args) -> GenerateConfig:
    cfg = load_config(GenerateConfig, args.config, args.set)
    flags = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop, dtype=args.dtype)
    return dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})


def run(args) -> int:
    from jaxcot.data.questions import load_questions
    from jaxcot.generate.traces import load_generator, write_traces
    from jaxcot.io import is_complete, refuse_same_file
    from jaxcot.models.loading import model_inputs
    from jaxcot.provenance import discard

    cfg = _config(args)
    if args.prompt is not None:
        if args.out:
            raise SystemExit("--out goes with --data, not --prompt")
        gen = load_generator(args.model, cfg, args.tokenizer, quantize=args.quantize)
        prompt = dataclasses.replace(cfg.prompt, template="{question}")
        (c,) = gen.generate([args.prompt], prompt=prompt, max_new_tokens=cfg.max_new_tokens,
                            sampling=cfg.sampling(), stop=tuple(cfg.stop), seed=cfg.seed)
        print(c.text)
        return 0
    if not args.out:
        raise SystemExit("--data needs --out")
    fields = QuestionFields(question_field=args.question_field, answer_field=args.answer_field,
                            id_field=args.id_field, split=args.split, limit=args.limit)
    refuse_same_file(args.out, data=args.data, model=args.model)
    items = load_questions(args.data, fields)
    if args.overwrite:
        discard(args.out)
    was_complete = is_complete(args.out)
    traces = write_traces(items, args.out, cfg,
                          lambda: load_generator(args.model, cfg, args.tokenizer, quantize=args.quantize),
                          origin={"quantize": args.quantize} if args.quantize else {},
                          inputs=model_inputs(args.model, args.tokenizer))
    if was_complete:
        print(f"{args.out} is complete ({len(traces)} records); pass --overwrite to regenerate", file=sys.stderr)
    else:
        print(f"wrote {args.out} ({len(traces)} records)", file=sys.stderr)
    return 0


__all__ = ["register", "run"]
