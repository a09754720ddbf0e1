"""Decode-time compression on a testbed teacher: early exit and KV eviction, no training.

Every row decodes the same held-out problems greedily through the continuous engine
(`jaxcot.generate.engine`, `--slots` rows at once); the first row is the plain engine (the static
loop's outputs, prompt by prompt). Per row: accuracy (GSM8K grading of the number), mean chain
tokens (the text before the answer, `jaxcot.eval.metrics.cot_tokens`), mean generated tokens, the
mean peak KV cache per row (slots held at once, prompt + chain + trial), the share of early exits
and decode seconds for the whole set (warm: each row's program runs once before the timed run).
Eviction budgets are fractions of the plain row's mean chain tokens (`--budgets`).

The teacher is the shipped one unless `--teacher` names another `jaxcot testbed teacher` export,
such as the overthinking teacher of `configs/teacher-overthinking.yaml` (its chains verify the
answer twice after the final line); its results go to `decode-compression-<name>.json`.

    python benchmarks/decode_compression.py                 # 300 problems
    python benchmarks/decode_compression.py --problems 64   # quicker
    python benchmarks/decode_compression.py --teacher runs/teacher-overthinking/model --new 400
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import results  # benchmarks/results.py

from jaxcot.eval.metrics import cot_tokens
from jaxcot.generate import Generator
from jaxcot.generate.config import EarlyExitConfig, EngineConfig, EvictionConfig
from jaxcot.models import load_model, load_tokenizer
from jaxcot.testbed.problems import generate
from jaxcot.testbed.teacher import EVAL_OFFSET, learned_task, teacher_path
from jaxcot.text.grading import grade_gsm8k
from jaxcot.text.prompts import PromptConfig, prompt_ids

# Early exits tried: (label, EarlyExitConfig overrides). Trials follow a blank line (the
# teacher's step boundary); "agree" asks the last k trials to give the same answer; "from n" holds
# trials back until n chain tokens (Dynasor-CoT's warm-up): the opener and the restated start
# take ~20-36 tokens, and their two trials both answer the start value, so agree 2 alone exits there.
# "cue": the trial takes the place of the blank line's second newline, so the marker follows the
# chain as the teacher's own answer does (chain, newline, "The answer is"), as DEER's inducer takes
# the place of its "Wait"; "complete": an answer not ended by "." within 6 tokens is not confident.
EXITS = [
    ("early exit p>=0.9", dict(threshold=0.9)),
    ("early exit p>=0.9, agree 2", dict(threshold=0.9, agree=2)),
    ("early exit p>=0.9, agree 2, from 32", dict(threshold=0.9, agree=2, min_tokens=32)),
    ("early exit cue, p>=0.9, agree 2, from 32", dict(threshold=0.9, agree=2, min_tokens=32, cue=True)),
    ("early exit cue, p>=0.95, complete", dict(threshold=0.95, cue=True, complete=True)),
]
SCORERS = ("attention", "redundancy", "recency")


def rows_to_run(chain: float, budgets: list[float], window: int) -> list[tuple[str, EngineConfig]]:
    """(label, engine) of every row after the plain one; eviction budgets as fractions of `chain`.
    The testbed's word tokenizer and SmolLM2's BPE both write a blank line inside a chain as two
    newline tokens, so a cue trial keeps the first and its marker follows it as the chain's own
    answer does."""
    out = []
    for label, kw in EXITS:
        out.append((label, EngineConfig(continuous=True, early_exit=EarlyExitConfig(enabled=True, boundary=["\n\n"],
                                                                                    **kw))))
    for frac in budgets:
        budget = max(int(round(frac * chain)), window + 1)
        for scorer in SCORERS:
            out.append((f"evict {frac:.0%} ({budget} tokens), {scorer}",
                        EngineConfig(continuous=True, eviction=EvictionConfig(budget=budget, window=window,
                                                                              scorer=scorer))))
    return out


def measure(model, tok, prompts, golds, engine: EngineConfig, new: int, slots: int) -> dict:
    gen = Generator(model, tok, engine=EngineConfig(**{**engine.__dict__, "slots": slots}))
    gen.generate_ids(prompts, max_new_tokens=new)  # compiles
    t0 = time.perf_counter()
    outs = gen.generate_ids(prompts, max_new_tokens=new)
    seconds = time.perf_counter() - t0
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return dict(accuracy=float(np.mean([grade_gsm8k(o.text, g) for o, g in zip(outs, golds)])),
                chain_tokens=float(np.mean([cot_tokens(o.text, count) for o in outs])),
                new_tokens=float(np.mean([len(o.token_ids) for o in outs])),
                peak_cache=float(np.mean([o.cache_peak for o in outs])),
                early_share=float(np.mean([o.exit_at is not None for o in outs])), seconds=seconds,
                example=outs[0].text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=300, help="held-out testbed problems")
    ap.add_argument("--new", type=int, default=320, help="max_new_tokens")
    ap.add_argument("--slots", type=int, default=16, help="rows decoding at once")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25],
                    help="eviction budgets, as fractions of the plain row's mean chain tokens")
    ap.add_argument("--window", type=int, default=8, help="the last chain tokens eviction never drops")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--teacher", default=None, help="a testbed teacher folder (default: the shipped one)")
    args = ap.parse_args()
    env = results.environment()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {env['cores']} cores ({env['cpu']})")
    path = args.teacher or teacher_path()
    if learned_task(path) is None:
        raise SystemExit(f"--teacher {path}: no teacher.json there (a `jaxcot testbed teacher` export)")
    name = results.teacher_label(args.teacher).replace("testbed", "decode-compression", 1)
    model, tok = load_model(path), load_tokenizer(path)
    recs = list(generate(args.problems, seed=args.seed, cfg=learned_task(path), offset=EVAL_OFFSET))
    prompts = [prompt_ids(tok, r["question"], PromptConfig(template="{question}")) for r in recs]
    golds = [r["gold"] for r in recs]
    plain = measure(model, tok, prompts, golds, EngineConfig(continuous=True), args.new, args.slots)
    rows = [("plain (continuous, every option off)", EngineConfig(continuous=True), plain)]
    print(f"plain: {plain}", flush=True)
    for label, engine in rows_to_run(plain["chain_tokens"], args.budgets, args.window):
        r = measure(model, tok, prompts, golds, engine, args.new, args.slots)
        rows.append((label, engine, r))
        print(f"{label}: {r}", flush=True)
    who = "testbed teacher" if args.teacher is None else results.teacher_label(args.teacher)
    header = [f"decoding ({who}, no training)", "accuracy", "chain tokens", "vs plain", "peak KV / row",
              "early exits", "decode s"]
    table = [[label, f"{r['accuracy']:.1%}", f"{r['chain_tokens']:.1f}",
              f"{r['chain_tokens'] / plain['chain_tokens'] - 1:+.0%}", f"{r['peak_cache']:.0f}",
              f"{r['early_share']:.0%}", f"{r['seconds']:.2f}"] for label, _, r in rows]
    print("\n| " + " | ".join(header) + " |")
    for t in table:
        print("| " + " | ".join(t) + " |")
    notes = [f"{args.problems} held-out problems (seed {args.seed}), {args.slots} slots, max_new_tokens {args.new}, "
             f"greedy; eviction keeps the last {args.window} chain tokens and the prompt."]
    # The README's rows: the plain engine, the most accurate early exit that exits, each budget's best scorer.
    exits = [t for t, (label, _, r) in zip(table, rows) if label.startswith("early") and r["early_share"] > 0]
    short = [table[0]] + ([max(exits, key=lambda t: float(t[1].rstrip("%")))] if exits else [])
    for frac in args.budgets:
        ours = sorted((t for t, (label, _, _) in zip(table, rows) if label.startswith(f"evict {frac:.0%} ")),
                      key=lambda t: -float(t[1].rstrip("%")))
        short.append(ours[0])
    results.write(name, {"rows": [dict(label=label, engine=repr(e), **r) for label, e, r in rows]},
                  {"decode": {**results.table(header, table), "notes": notes},
                   "readme": {**results.table(header[:-1], [t[:-1] for t in short]), "notes": notes}},
                  args=args, env=env)


if __name__ == "__main__":
    main()
