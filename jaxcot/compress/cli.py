"""`jaxcot compress`: scored traces -> a compressed SFT set (JSONL), a summary JSON and a table
(`write_compressed`).

    jaxcot compress --scored scored.jsonl --method gogi-ads --out sets/gogi.jsonl beta=0.2 n_max=8
    jaxcot compress --scored scored.jsonl --method tokenskip "gammas=[0.5, 0.7, 1.0]"
    jaxcot compress --scored scored.jsonl --method step-entropy --kappa 0.6

Trailing `key=value` items set any `CompressConfig` field (values parsed as YAML); `--config`
reads them from a YAML file first.
"""

from __future__ import annotations

import argparse
import dataclasses

from jaxcot.compress.pipeline import METHODS, CompressConfig, format_table, summary_path, write_compressed
from jaxcot.config import HelpFormatter, load_config
from jaxcot.io import iter_jsonl, refuse_same_file
from jaxcot.provenance import discard


def _default_out(scored: str, method: str) -> str:
    stem = scored[: -len(".jsonl")] if scored.endswith(".jsonl") else scored
    return f"{stem}.{method}.jsonl"


def run(args: argparse.Namespace) -> int:
    cfg = load_config(CompressConfig, args.config, list(args.overrides) + [f"method={args.method}"])
    flags = {k: getattr(args, k)
             for k in ("gamma", "kappa", "seed", "format", "eot", "max_tokens", "tokenizer", "grader")}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    if args.out:
        refuse_same_file(args.out, scored=args.scored)
    lines, records = [], []
    for lineno, rec in iter_jsonl(args.scored):
        lines.append(f"{args.scored}:{lineno}")
        records.append(rec)
    path = args.out or _default_out(args.scored, args.method)
    if args.overwrite:
        discard(path)
    out = write_compressed(records, path, cfg, wheres=lines)
    print(format_table(out.summary))
    print(f"\nwrote {len(out.examples)} examples to {path}\nsummary: {summary_path(path)}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("compress", help="compress scored chains into an SFT training set",
                              description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--scored", required=True, help="scored records (JSONL, from `jaxcot score`)")
    p.add_argument("--method", required=True, choices=sorted(METHODS),
                   help="the compression method (its rule, importance and format)")
    p.add_argument("--out", help="output JSONL (default: <scored>.<method>.jsonl); the summary goes beside it")
    p.add_argument("--config", help="YAML file of CompressConfig fields")
    p.add_argument("--gamma", type=float, help="retention (TokenSkip format without it draws from `gammas`)")
    p.add_argument("--kappa", type=float, help="fraction of steps replaced (step-entropy)")
    p.add_argument("--seed", type=int, help="seed of random importance and TokenSkip's gamma draws (default 0)")
    p.add_argument("--format", choices=("plain", "tokenskip"), help="prompt format (default: the method's)")
    p.add_argument("--eot", help="end-of-turn marker for the TokenSkip prompt (default <|im_end|>)")
    p.add_argument("--max-tokens", dest="max_tokens", type=int,
                   help="drop examples longer than this (needs --tokenizer)")
    p.add_argument("--tokenizer", help="local HF tokenizer folder used by --max-tokens")
    p.add_argument("--grader",
                   help="gsm8k, math or module:function (answer, gold) -> bool for traces without `correct`")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if other settings made it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any CompressConfig field")
    p.set_defaults(func=run)
