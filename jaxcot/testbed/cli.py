"""`jaxcot testbed data|tokenizer|teacher|leaderboard`: write arithmetic testbed traces, its
tokenizer, train the teacher, or judge every importance scorer against the ground truth."""

from __future__ import annotations

import dataclasses
import json
import os

from jaxcot.config import HelpFormatter, add_command, check, command_config
from jaxcot.io import atomic_write_jsonl
from jaxcot.testbed.problems import TestbedConfig, generate
from jaxcot.testbed.tokenizer import build_testbed_tokenizer, chain_stats, check_roundtrip, record_texts


def _config(args) -> TestbedConfig | None:
    return command_config(TestbedConfig, args)


def format_stats(stats: dict) -> str:
    """Human-readable lines for `chain_stats` output."""
    c = stats["chain_tokens"]
    lines = [f"records: {stats['records']}",
             f"chain tokens: mean {c['mean']:.1f}  p10 {c['p10']:.0f}  median {c['p50']:.0f}  p90 {c['p90']:.0f}  "
             f"min {c['min']}  max {c['max']}",
             f"question tokens: mean {stats['question_tokens_mean']:.1f}; "
             f"answer tokens: mean {stats['answer_tokens_mean']:.1f}",
             f"essential (equation) tokens: {100 * stats['essential_share']:.1f}%;  "
             f"removable: {100 * stats['removable_share']:.1f}%",
             "share of chain tokens by role:"]
    for role, share in sorted(stats["role_share"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {role:<14} {100 * share:5.1f}%")
    return "\n".join(lines)


def cmd_data(args) -> int:
    cfg = _config(args)
    if cfg is None:
        return 0
    check(args.n >= 1, "--n", f"must be >= 1, got {args.n}")
    check(args.offset >= 0, "--offset", f"must be >= 0, got {args.offset}")
    records = list(generate(args.n, args.seed, cfg, offset=args.offset))
    n = atomic_write_jsonl(args.out, records)
    tok = build_testbed_tokenizer(cfg=cfg)
    check_roundtrip(tok, record_texts(records))
    stats = chain_stats(records, tok)
    print(f"wrote {n} testbed traces to {args.out} (seed {args.seed}, offset {args.offset})")
    print(format_stats(stats))
    if args.stats_json:
        from jaxcot.io import atomic_write_json

        atomic_write_json(args.stats_json, stats)
    return 0


def cmd_tokenizer(args) -> int:
    cfg = _config(args)
    if cfg is None:
        return 0
    tok = build_testbed_tokenizer(sample=args.sample, seed=args.seed, cfg=cfg)
    check_roundtrip(tok, record_texts(generate(200, args.seed + 1, cfg)))
    os.makedirs(args.out, exist_ok=True)
    tok.save_pretrained(args.out)
    print(json.dumps({"out": args.out, "vocab_size": len(tok)}))
    return 0


def cmd_teacher(args) -> int:
    from jaxcot.testbed.teacher import TeacherConfig, train_teacher

    cfg = command_config(TeacherConfig, args)
    if cfg is None:
        return 0
    summary = train_teacher(cfg)
    if summary.get("status") != "finished":
        print(f"teacher training {summary.get('status')} at step {summary.get('step')}; "
              "rerun the same command to resume")
        return 1
    print(f"teacher: greedy accuracy {100 * summary['accuracy']:.1f}% on {summary['n_eval']} held-out problems "
          f"after {summary['steps']} steps ({summary['minutes']:.1f} min); "
          f"model in {os.path.join(cfg.out_dir, 'model')}")
    if args.ship:
        import shutil
        from importlib.resources import files

        dest = str(files("jaxcot") / "assets" / "teacher")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(os.path.join(cfg.out_dir, "model"), dest)
        print(f"shipped to {dest}")
    return 0


def cmd_leaderboard(args) -> int:
    from jaxcot.importance.config import ScoreConfig
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.models.names import resolve_model
    from jaxcot.testbed.leaderboard import DEFAULT_SCORERS, format_table, leaderboard, write_leaderboard
    from jaxcot.testbed.teacher import learned_task
    from jaxcot.text.prompts import PromptConfig

    cfg = command_config(ScoreConfig, args)
    if cfg is None:
        return 0
    if cfg.prompt is None:  # a testbed teacher learned the bare question as its user turn (`teacher_examples`)
        cfg = dataclasses.replace(cfg, prompt=PromptConfig(template="{question}"))
    path = resolve_model(args.model)
    task = learned_task(path) or TestbedConfig()
    model, tok = load_model(path), load_tokenizer(args.tokenizer or path)
    # h^L feeds only its own slot's logits, so no chain token there reaches the answer
    layers = args.layer or list(range(model.config.num_layers))
    refs = list(generate(args.samples, args.seed, task))
    rows = leaderboard(model, tok, refs, cfg, layers=layers, scorers=args.scorer or DEFAULT_SCORERS)
    write_leaderboard(rows, args.out, {"model": args.model, "samples": args.samples, "seed": args.seed,
                                       "truth": "essential tokens", "goal": cfg.goal, "norm": cfg.norm,
                                       "testbed": dataclasses.asdict(task)})
    print(format_table(rows))
    print(f"\nwrote {os.path.join(args.out, 'leaderboard.json')}, leaderboard.md and leaderboard_layers.png")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("testbed", description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="testbed_command", required=True)
    d = add_command(sub, "data", config="TestbedConfig", example="max_steps=2 'ops=[add, sub]'",
                    description="write N testbed traces (JSONL) and print token/role statistics")
    d.add_argument("--n", type=int, required=True, help="number of problems")
    d.add_argument("--seed", type=int, default=0, help="problem seed (record i of a seed is always the same)")
    d.add_argument("--offset", type=int, default=0, help="first problem index (disjoint ranges = disjoint splits)")
    d.add_argument("--out", required=True, help="output JSONL file")
    d.add_argument("--stats-json", default=None, help="also write the statistics as JSON here")
    d.set_defaults(func=cmd_data)
    t = add_command(sub, "tokenizer", config="TestbedConfig", example="max_value=50",
                    description="build the testbed word-level tokenizer and save it (HF format)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--seed", type=int, default=0, help="seed of the sample problems added to the vocabulary")
    t.add_argument("--sample", type=int, default=500, help="generated problems added to the template words")
    t.set_defaults(func=cmd_tokenizer)
    te = add_command(sub, "teacher", config="TeacherConfig", example="steps=2000 testbed.max_steps=2",
                     description="train the testbed teacher from scratch (learning curve, export); "
                     "e.g. --config configs/teacher.yaml")
    te.add_argument("--ship", action="store_true", help="copy the result into jaxcot/assets/teacher (the demo's start)")
    te.set_defaults(func=cmd_teacher)
    lb = add_command(sub, "leaderboard", config="ScoreConfig", example="goal=value batch_size=16",
                     description="every importance scorer against the testbed's ground truth at every layer: "
                     "ROC-AUC, average precision, agreement with the counterfactual; a table and a plot")
    lb.add_argument("--model", default="teacher", help="a testbed model (default: the shipped teacher)")
    lb.add_argument("--tokenizer", help="tokenizer source (default: --model)")
    lb.add_argument("--samples", type=int, default=100, help="reference chains scored")
    lb.add_argument("--seed", type=int, default=1000, help="problem seed of the reference chains")
    lb.add_argument("--layer", type=int, action="append", help="a layer to score at (repeat; default: 0..L-1)")
    lb.add_argument("--scorer", action="append", help="a scorer (repeat; default: the built-in token scorers)")
    lb.add_argument("--out", default="runs/leaderboard", help="output folder")
    lb.set_defaults(func=cmd_leaderboard)
