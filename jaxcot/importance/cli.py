"""`jaxcot score`: GoGI, entropy and self-information for every chain token of a traces file, one
scored record per trace to --out, resumably (`write_scores`); or with `--probe N` per-layer GoGI
statistics over N traces, to choose `--layer`."""

from __future__ import annotations

import sys

from jaxcot.config import HelpFormatter
from jaxcot.importance.encode import GOALS
from jaxcot.importance.gogi import NORMS
from jaxcot.importance.score import ScoreConfig
from jaxcot.models.loading import add_model_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("score", description=__doc__, formatter_class=HelpFormatter,
                              help="score chain tokens (GoGI, entropy, self-information) of a traces JSONL")
    d = ScoreConfig()
    add_model_arguments(p)
    p.add_argument("--traces", required=True, help="traces JSONL (id, question, chain, answer)")
    p.add_argument("--out", help="scored records JSONL")
    p.add_argument("--layer", type=int, action="append",
                   help="residual stream h^l to perturb (0 = embeddings); repeat to average layers; "
                   "default round(2/3 L)")
    p.add_argument("--norm", choices=NORMS, default=d.norm, help="norm of the goal-gradient at each token")
    p.add_argument("--goal", choices=GOALS, default=d.goal,
                   help="answer tokens whose loss is differentiated: all of them (docs/method.md) or only the "
                        "answer's value (the gold string, a \\boxed{} or the last number)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="traces per batch")
    p.add_argument("--include-incorrect", action="store_true",
                   help="also score traces marked incorrect (correct: false); by default they are skipped")
    p.add_argument("--probe", type=int, metavar="N", help="print per-layer statistics over the first N traces")
    p.add_argument("--llmlingua", metavar="PATH", help="LLMLingua-2 checkpoint folder: add scores['llmlingua']")
    p.add_argument("--prompt-template", help="generation's prompt template (default: generate's default)")
    p.add_argument("--system", help="generation's system prompt")
    p.add_argument("--sep", default=d.sep, help="text between chain and answer (default: none)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=d.dtype, help="weights and compute")
    p.add_argument("--overwrite", action="store_true", help="rescore even if --out is complete")
    p.set_defaults(func=run)


def _config(args) -> ScoreConfig:
    from jaxcot.text.prompts import PromptConfig

    prompt = None
    if args.prompt_template or args.system is not None:
        template = {"template": args.prompt_template} if args.prompt_template else {}
        prompt = PromptConfig(system=args.system, **template)
    return ScoreConfig(layers=args.layer, norm=args.norm, goal=args.goal, batch_size=args.batch_size,
                       only_correct=not args.include_incorrect, prompt=prompt, sep=args.sep, dtype=args.dtype,
                       llmlingua=args.llmlingua)


def run(args) -> int:
    import jax.numpy as jnp

    from jaxcot.importance.gogi import default_layer
    from jaxcot.importance.score import format_probe, layer_probe, write_scores
    from jaxcot.io import is_complete, read_jsonl, refuse_same_file
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.models.loading import model_inputs
    from jaxcot.provenance import discard
    from jaxcot.sharding import make_mesh

    if args.probe is None and not args.out:
        raise SystemExit("jaxcot score: give --out (or --probe N)")
    cfg = _config(args)
    if args.out:
        refuse_same_file(args.out, traces=args.traces, model=args.model)
    traces = read_jsonl(args.traces, required=("id", "question", "chain", "answer"))

    def load():
        dtype = jnp.dtype(cfg.dtype)
        return (load_model(args.model, dtype=dtype, param_dtype=dtype, mesh=make_mesh()),
                load_tokenizer(args.tokenizer or args.model))

    if args.probe is not None:
        model, tokenizer = load()
        picked = [t for t in traces if cfg.selects(t)][: args.probe]
        layer = default_layer(model.config.num_layers)
        print(f"GoGI ({cfg.norm}) per layer over {len(picked)} traces; * = default round(2/3 L) = {layer}")
        print(format_probe(layer_probe(model, tokenizer, picked, cfg), layer))
        return 0
    if args.overwrite:
        discard(args.out)
    was_complete = is_complete(args.out)
    scored = write_scores(traces, args.out, cfg, load, inputs=model_inputs(args.model, args.tokenizer),
                          where=args.traces)
    verb = "is complete" if was_complete else "wrote"
    print(f"{args.out} {verb} ({len(scored)} records){'; pass --overwrite to rescore' if was_complete else ''}",
          file=sys.stderr)
    return 0


__all__ = ["register", "run"]
