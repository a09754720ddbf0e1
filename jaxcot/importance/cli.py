"""`jaxcot score`: GoGI, entropy and self-information for every chain token of a traces file.

`--probe N` instead prints per-layer GoGI statistics over N traces, to choose `--layer`.
"""

from __future__ import annotations

import os
import sys

from jaxcot.importance.encode import GOALS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score chain tokens (GoGI, entropy, self-information) of a traces JSONL",
        description="Write one scored record per trace to --out (resumable), or with --probe N print "
        "per-layer GoGI statistics over N traces.",
    )
    p.add_argument("--model", required=True, help="HF folder or .gguf file")
    p.add_argument("--tokenizer", help="tokenizer source (default: --model)")
    p.add_argument("--traces", required=True, help="traces JSONL (id, question, chain, answer)")
    p.add_argument("--out", help="scored records JSONL")
    p.add_argument("--layer", type=int, action="append",
                   help="residual stream h^l to perturb (0 = embeddings); repeat to average layers; "
                   "default round(2/3 L)")
    p.add_argument("--norm", choices=("l1", "l2"), default="l1")
    p.add_argument("--goal", choices=GOALS, default="answer",
                   help="answer tokens whose loss is differentiated: all of them (METHOD.md) or only the "
                        "answer's value (the gold string, a \\boxed{} or the last number)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--only-correct", action="store_true", help="skip traces whose 'correct' is not true")
    p.add_argument("--probe", type=int, metavar="N", help="print per-layer statistics over the first N traces")
    p.add_argument("--llmlingua", metavar="PATH", help="LLMLingua-2 checkpoint folder: add scores['llmlingua']")
    p.add_argument("--prompt-template", help="generation's prompt template (default: generate's default)")
    p.add_argument("--system", help="generation's system prompt")
    p.add_argument("--sep", default="", help="text between chain and answer (default: none)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--overwrite", action="store_true", help="rescore even if --out is complete")
    p.set_defaults(func=run)


def run(args) -> int:
    import jax.numpy as jnp

    from jaxcot.generate.format import PromptConfig
    from jaxcot.importance.gogi import default_layer
    from jaxcot.importance.score import format_probe, iter_scored, layer_probe
    from jaxcot.io import ResumableJsonl, iter_jsonl
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.sharding import make_mesh

    if args.probe is None and not args.out:
        raise SystemExit("jaxcot score: give --out (or --probe N)")
    records = []
    for lineno, rec in iter_jsonl(args.traces, required=("id", "question", "chain", "answer")):
        if args.only_correct and rec.get("correct") is not True:
            continue
        records.append(rec)
    prompt = PromptConfig(system=args.system, **({"template": args.prompt_template} if args.prompt_template else {}))
    if args.out and args.probe is None and os.path.exists(args.out) and not os.path.exists(args.out + ".partial") \
            and not args.overwrite:
        print(f"{args.out} is complete; pass --overwrite to rescore", file=sys.stderr)
        return 0
    dtype = jnp.dtype(args.dtype)
    model = load_model(args.model, dtype=dtype, param_dtype=dtype, mesh=make_mesh())
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    common = dict(norm=args.norm, batch_size=args.batch_size, sep=args.sep, prompt=prompt, goal=args.goal)
    if args.probe is not None:
        rows = layer_probe(model, tokenizer, records[: args.probe], **common)
        print(f"GoGI ({args.norm}) per layer over {min(args.probe, len(records))} traces; * = default "
              f"round(2/3 L) = {default_layer(model.config.num_layers)}")
        print(format_probe(rows, default_layer(model.config.num_layers)))
        return 0
    writer = ResumableJsonl(args.out, key="id")
    todo = [r for r in records if r["id"] not in writer.done]
    llmlingua = None
    if args.llmlingua:
        from jaxcot.importance.llmlingua import LLMLinguaScorer

        llmlingua = LLMLinguaScorer.from_pretrained(args.llmlingua)
    try:
        for _, rec in iter_scored(model, tokenizer, todo, layers=args.layer, llmlingua=llmlingua,
                                  where=args.traces, **common):
            writer.write(rec)
    finally:
        writer.close()
    writer.finish()
    print(f"wrote {args.out} ({len(records)} records)", file=sys.stderr)
    return 0


__all__ = ["register", "run"]
