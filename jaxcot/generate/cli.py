"""`jaxcot generate`: `--prompt TEXT` prints one completion; `--data FILE --out traces.jsonl` writes
one trace record per question (`write_traces`), resuming an interrupted run."""

from __future__ import annotations

import dataclasses
import sys

from jaxcot.config import Flag, add_command, command_config
from jaxcot.data.questions import DATA_HELP, add_question_arguments, question_fields
from jaxcot.generate.traces import DTYPES, QUANTIZE, GenerateConfig
from jaxcot.models.names import add_model_arguments

FLAGS = (
    Flag("--batch-size", "batch_size", int, "rows per batch"),
    Flag("--max-new-tokens", "max_new_tokens", int, "tokens generated at most"),
    Flag("--temperature", "temperature", float, "0 = greedy"),
    Flag("--top-k", "top_k", int, "sample among the k likeliest tokens; 0 = all"),
    Flag("--top-p", "top_p", float, "nucleus sampling mass"),
    Flag("--seed", "seed", int, "sampling seed; each row has its own stream"),
    Flag("--stop", "stop", str, "stop string", many=True),
    Flag("--dtype", "dtype", str, "compute and weight dtype", choices=DTYPES),
    Flag("--continuous", "engine.continuous", help="continuous batching: a finished row's slot takes the next prompt",
         switch=True),
    Flag("--slots", "engine.slots", int, "rows decoding at once in the continuous loop"),
    Flag("--early-exit", "engine.early_exit.enabled", help="end a chain early at a confident trial answer "
         "(with --continuous; settings: engine.early_exit.*)", switch=True),
    Flag("--evict-budget", "engine.eviction.budget", int, "chain tokens a row keeps cached, 0 = all "
         "(with --continuous; settings: engine.eviction.*)"),
)


def register(subparsers) -> None:
    p = add_command(subparsers, "generate", description=__doc__, config="GenerateConfig",
                    example="max_new_tokens=512 prompt.system='Be brief.'", flags=FLAGS)
    add_model_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="a user message; prints the completion")
    src.add_argument("--data", help=DATA_HELP)
    p.add_argument("--out", help="output traces JSONL (with --data)")
    p.add_argument("--quantize", choices=[q for q in QUANTIZE if q],
                   help="int8 weight-only projections for decoding (saves memory; on CPU not time)")
    add_question_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="regenerate even if --out is complete")
    p.set_defaults(func=run)


def _config(args) -> GenerateConfig | None:
    return command_config(GenerateConfig, args)


def run(args) -> int:
    from jaxcot.data.questions import load_questions
    from jaxcot.generate.traces import load_generator, trace_counts, write_traces
    from jaxcot.io import is_complete, refuse_same_file
    from jaxcot.models.loading import model_inputs
    from jaxcot.provenance import ALWAYS

    cfg = _config(args)
    if cfg is None:
        return 0
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
    fields = question_fields(args)
    refuse_same_file(args.out, data=args.data, model=args.model)
    items = load_questions(args.data, fields)
    inputs = model_inputs(args.model, args.tokenizer)  # a mistyped model is refused before --out is touched
    was_complete = is_complete(args.out) and not args.overwrite
    # --overwrite: the finished output stays until its replacement is complete (`jaxcot.provenance.claim`)
    traces = write_traces(items, args.out, cfg,
                          lambda: load_generator(args.model, cfg, args.tokenizer, quantize=args.quantize),
                          origin={"quantize": args.quantize} if args.quantize else {},
                          inputs=inputs, replace=ALWAYS if args.overwrite else False)
    if was_complete:
        print(f"{args.out} is complete ({len(traces)} records); pass --overwrite to regenerate", file=sys.stderr)
    else:
        print(f"wrote {args.out} ({trace_counts(traces)})", file=sys.stderr)
    return 0


__all__ = ["register", "run"]
