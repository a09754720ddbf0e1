"""`jaxcot score`: the named scorers (GoGI, entropy and self-information by default) for every
chain token of a traces file, one scored record per trace to --out, resumably (`write_scores`);
or with `--probe N` per-layer GoGI statistics over N traces, to choose `--layer`."""

from __future__ import annotations

import sys

from jaxcot.config import Flag, add_command, command_config
from jaxcot.importance.config import GOALS, NORMS, ScoreConfig
from jaxcot.models.names import add_model_arguments

FLAGS = (
    Flag("--scorer", "scorers", str, "a scorer to run (gogi, entropy, self_info, random, llmlingua, or "
         "package.module:function); repeat for several; default gogi, entropy, self_info", many=True),
    Flag("--layer", "layers", int, "residual stream h^l to perturb (0 = embeddings); repeat to average layers; "
         "default round(2/3 L)", many=True),
    Flag("--norm", "norm", str, "norm of the goal-gradient at each token", choices=NORMS),
    Flag("--goal", "goal", str, "answer tokens whose loss is differentiated: all of them (docs/method.md) or only "
         "the answer's value (the gold string, a \\boxed{} or the last number)", choices=GOALS),
    Flag("--batch-size", "batch_size", int, "traces per batch"),
    Flag("--include-incorrect", "only_correct", help="also score traces marked incorrect (correct: false)",
         switch=False),
    Flag("--llmlingua", "llmlingua", str, "LLMLingua-2 checkpoint folder: add scores['llmlingua']"),
    Flag("--prompt-template", "prompt.template", str, "generation's prompt template (default: generate's)"),
    Flag("--system", "prompt.system", str, "generation's system prompt"),
    Flag("--sep", "sep", str, "text between chain and answer (default: none)"),
    Flag("--dtype", "dtype", str, "weights and compute", choices=("float32", "bfloat16")),
)


def register(subparsers) -> None:
    p = add_command(subparsers, "score", description=__doc__, config="ScoreConfig",
                    example="layers=[3] goal=value", flags=FLAGS)
    add_model_arguments(p)
    p.add_argument("--traces", required=True, help="traces JSONL (id, question, chain, answer)")
    p.add_argument("--out", help="scored records JSONL")
    p.add_argument("--probe", type=int, metavar="N", help="print per-layer statistics over the first N traces")
    p.add_argument("--overwrite", action="store_true", help="rescore even if --out is complete")
    p.set_defaults(func=run)


def run(args) -> int:
    import jax.numpy as jnp

    from jaxcot.importance.gogi import default_layer
    from jaxcot.importance.score import format_probe, layer_probe, write_scores
    from jaxcot.io import is_complete, read_jsonl, refuse_same_file
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.models.loading import model_inputs
    from jaxcot.provenance import ALWAYS
    from jaxcot.sharding import config_mesh

    cfg = command_config(ScoreConfig, args)
    if cfg is None:
        return 0
    if args.probe is None and not args.out:
        raise SystemExit("jaxcot score: give --out (or --probe N)")
    if args.out:
        refuse_same_file(args.out, traces=args.traces, model=args.model)
    traces = read_jsonl(args.traces, required=("id", "question", "chain", "answer"))

    def load():
        dtype = jnp.dtype(cfg.dtype)
        return (load_model(args.model, dtype=dtype, param_dtype=dtype, mesh=config_mesh(cfg.mesh)),
                load_tokenizer(args.tokenizer or args.model))

    if args.probe is not None:
        model, tokenizer = load()
        picked = [t for t in traces if cfg.selects(t)][: args.probe]
        layer = default_layer(model.config.num_layers)
        print(f"GoGI ({cfg.norm}) per layer over {len(picked)} traces; * = default round(2/3 L) = {layer}")
        print(format_probe(layer_probe(model, tokenizer, picked, cfg), layer))
        return 0
    inputs = model_inputs(args.model, args.tokenizer)  # a mistyped model is refused before --out is touched
    was_complete = is_complete(args.out) and not args.overwrite
    # --overwrite: the finished output stays until its replacement is complete (`jaxcot.provenance.claim`)
    scored = write_scores(traces, args.out, cfg, load, inputs=inputs, where=args.traces,
                          replace=ALWAYS if args.overwrite else False)
    verb = "is complete" if was_complete else "wrote"
    print(f"{args.out} {verb} ({len(scored)} records){'; pass --overwrite to rescore' if was_complete else ''}",
          file=sys.stderr)
    return 0


__all__ = ["register", "run"]
