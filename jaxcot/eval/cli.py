"""`jaxcot eval`: one model or student on a benchmark (`evaluate_model`): accuracy by the grader,
mean chain tokens, throughput, batch-1 latency and, against an earlier result (`baseline=`),
ActRatio and speedup; a JSON result to --out and a Markdown table beside it (.md).

    jaxcot eval --model smollm2 --data gsm8k --limit 50 --out evals/smollm2.json
    jaxcot eval --model runs/demo/students/gogi-skip/model --data runs/demo/data/test.jsonl \\
        --out evals/gogi-skip.json baseline=evals/original.json

Trailing `key=value` items set any `EvalConfig` field (values parsed as YAML); `--config` reads
them from a YAML file first.
"""

from __future__ import annotations

import sys

from jaxcot.config import Flag, add_command, command_config
from jaxcot.data.questions import DATA_HELP, add_question_arguments, question_fields
from jaxcot.models.names import add_model_arguments

FLAGS = (
    Flag("--max-new-tokens", "max_new_tokens", int, "tokens generated at most per question"),
    Flag("--batch-size", "batch_size", int, "rows per batch of the accuracy pass and the throughput batch"),
    Flag("--latency-samples", "latency_samples", int, "questions timed one at a time (batch 1)"),
    Flag("--grader", "grader", str, "gsm8k, math or module:function (completion, gold) -> bool"),
    Flag("--baseline", "baseline", str, "an earlier `jaxcot eval` JSON: ActRatio and speedup against it"),
)


def register(subparsers) -> None:
    p = add_command(subparsers, "eval", description=__doc__, config="EvalConfig",
                    example="max_new_tokens=512 latency_samples=8", flags=FLAGS)
    add_model_arguments(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    add_question_arguments(p)
    p.add_argument("--out", required=True, help="result JSON; the Markdown table goes beside it (.md)")
    p.add_argument("--name", help="the model's row in the table (default: its folder's name)")
    p.add_argument("--overwrite", action="store_true", help="evaluate again even if --out is up to date")
    p.set_defaults(func=run)


def run(args) -> int:
    from jaxcot.data.questions import load_questions
    from jaxcot.eval.report import model_table
    from jaxcot.eval.students import EvalConfig, evaluate_model, model_student, table_path
    from jaxcot.io import refuse_same_file
    from jaxcot.provenance import ALWAYS

    cfg = command_config(EvalConfig, args)
    if cfg is None:
        return 0
    refuse_same_file(args.out, data=args.data, model=args.model, baseline=cfg.baseline)
    test = load_questions(args.data, question_fields(args))
    student = model_student(args.model, cfg, name=args.name, tokenizer=args.tokenizer)
    # --overwrite: the finished result stays until its replacement is written (`jaxcot.provenance.claim`)
    result = evaluate_model(student, test, cfg, args.out, say=lambda m: print(m, file=sys.stderr), source=args.data,
                            replace=ALWAYS if args.overwrite else False)
    print(model_table({student.name: result}), end="")
    print(f"\nwrote {args.out} and {table_path(args.out)}", file=sys.stderr)
    return 0


__all__ = ["register", "run"]
