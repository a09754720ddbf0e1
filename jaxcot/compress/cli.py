"""`jaxcot compress`: scored traces -> a compressed SFT set (JSONL), a summary JSON and a table
(`write_compressed`).

    jaxcot compress --scored scored.jsonl --method gogi-ads --out sets/gogi.jsonl ads.beta=0.2 ads.n_max=8
    jaxcot compress --scored scored.jsonl --method tokenskip "builder.gammas=[0.5, 0.7, 1.0]"
    jaxcot compress --scored scored.jsonl --method step-entropy --kappa 0.6
    jaxcot compress --scored scored.jsonl --method gogi-static rule=my_pkg.rules:mine

Trailing `key=value` items set any `CompressConfig` field (values parsed as YAML; a rule's
settings under its section: `ads.`, `static.`, `step.`); `--config` reads them from a YAML file
first; the flags are shorthands for single fields.
"""

from __future__ import annotations

import argparse

from jaxcot.compress.config import METHODS, CompressConfig
from jaxcot.config import Flag, add_command, command_config


def _default_out(scored: str, method: str) -> str:
    stem = scored[: -len(".jsonl")] if scored.endswith(".jsonl") else scored
    return f"{stem}.{method}.jsonl"


def run(args: argparse.Namespace) -> int:
    from jaxcot.compress.pipeline import format_table, summary_path, write_compressed

    cfg = command_config(CompressConfig, args)
    if cfg is None:
        return 0
    from jaxcot.io import iter_jsonl, refuse_same_file
    from jaxcot.provenance import ALWAYS

    if args.out:
        refuse_same_file(args.out, scored=args.scored)
    lines, records = [], []
    for lineno, rec in iter_jsonl(args.scored):
        lines.append(f"{args.scored}:{lineno}")
        records.append(rec)
    path = args.out or _default_out(args.scored, cfg.method)
    # --overwrite: the finished set stays until its replacement is written (`jaxcot.provenance.claim`)
    out = write_compressed(records, path, cfg, wheres=lines, source=args.scored,
                           replace=ALWAYS if args.overwrite else False)
    print(format_table(out.summary))
    print(f"\nwrote {len(out.examples)} examples to {path}\nsummary: {summary_path(path)}")
    return 0


FLAGS = (
    Flag("--method", "method", str, "the compression method (its rule, importance and format)",
         choices=tuple(sorted(METHODS))),
    Flag("--gamma", "gamma", float, "retention (TokenSkip format without it draws from `gammas`)"),
    Flag("--rule", "rule", str, "the rule (default: the method's): ads, static, random, step, original or "
         "package.module:attribute"),
    Flag("--importance", "importance", str, "the scores field ranked (default: the method's), or random"),
    Flag("--kappa", "step.kappa", float, "fraction of steps replaced (step-entropy)"),
    Flag("--seed", "seed", int, "seed of random importance and TokenSkip's gamma draws"),
    Flag("--format", "format", str, "prompt format (default: the method's)", choices=("plain", "tokenskip")),
    Flag("--eot", "builder.eot", str, "end-of-turn marker for the TokenSkip prompt"),
    Flag("--max-tokens", "filter.max_tokens", int, "drop examples longer than this (needs --tokenizer)"),
    Flag("--tokenizer", "filter.tokenizer", str, "local HF tokenizer folder used by --max-tokens"),
    Flag("--grader", "filter.grader", str, "gsm8k, math or module:function (answer, gold) -> bool, for traces without "
         "`correct`"),
)


def register(subparsers) -> None:
    p = add_command(subparsers, "compress", description=__doc__, config="CompressConfig",
                    example="ads.beta=0.2 ads.n_max=8", flags=FLAGS)
    p.add_argument("--scored", required=True, help="scored records (JSONL, from `jaxcot score`)")
    p.add_argument("--out", help="output JSONL (default: <scored>.<method>.jsonl); the summary goes beside it")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if other settings made it")
    p.set_defaults(func=run)
