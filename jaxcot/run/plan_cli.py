"""`jaxcot plan --config configs/gemma3-4b-math.yaml --topology v5e:2x4 [key=value ...]`: compile
the run's LoRA train step, GoGI pass and generation for a TPU topology, without a TPU, and print
the memory per device against the chip's HBM and the hours for the run's workloads.

The architecture comes from the config's model folder (its config.json) or, where that folder is
not on this host, from configs/arch/<its name>/config.json (the published configs of the paper's
models). Shapes and workloads default to the run config's (generate batch and length, score
layer, LoRA rank, questions; with `generate.engine.continuous`, the engine's slots, queue and
eviction, and generation is then planned as the engine's program); key=value overrides set any
PlanConfig field (train_rows=32, mesh=[2,4,1], mfu=0.5, engine_slots=16). libtpu comes in a
folder of its own, installed on first use (`jaxcot.run.libtpu`), never into this environment.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from jaxcot.config import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "plan", description=__doc__, config="PlanConfig", example="train_rows=32 mfu=0.5",
                    config_required=True, config_help="the YAML RunConfig to plan (e.g. configs/gemma3-4b-math.yaml); "
                    "KEY=VALUE overrides set PlanConfig fields")
    p.add_argument("--topology", required=True, help="TPU slice, e.g. v5e:2x4, v4:2x2x2, v5p:2x2x2")
    p.add_argument("--arch", help="a folder with the model's config.json (default: the config's model, else "
                                  "configs/arch/<its name>)")
    p.add_argument("--out", help="also write the table to this Markdown file")
    p.add_argument("--fit", action="store_true", help="for each program that does not fit, try remat, fewer rows "
                   "per device, then wider fsdp / tensor axes, and report the first change that fits")
    p.set_defaults(func=run)


def arch_folder(model: str, arch: str | None, config_path: str) -> str:
    """Where the model's config.json is read from (see the module docstring)."""
    if arch:
        return arch
    if os.path.isfile(os.path.join(model, "config.json")):
        return model
    name = os.path.basename(os.path.normpath(model))
    for root in (os.path.dirname(os.path.abspath(config_path)), "configs"):
        cand = os.path.join(root, "arch", name)
        if os.path.isfile(os.path.join(cand, "config.json")):
            return cand
    raise FileNotFoundError(f"{model}: no config.json there and no configs/arch/{name}/config.json; pass --arch")


def _from_run(run_cfg) -> dict[str, tuple[Any, str]]:
    """PlanConfig fields the run config sets: {field: (value, where in the config)}."""
    tc = run_cfg.student_config("plan", "x", "y")  # TrainConfig: the run's `student` over its defaults
    student = lambda k: f"student.{k}" if k.split(".")[0] in run_cfg.student else f"TrainConfig.{k}"  # noqa: E731
    m, sm = tc.mesh, run_cfg.score.mesh
    got = {"new_tokens": (run_cfg.generate.max_new_tokens, "generate.max_new_tokens"),
           "decode_rows": (run_cfg.generate.batch_size, "generate.batch_size"),
           "generate_dtype": (run_cfg.generate.dtype, "generate.dtype"),
           "score_dtype": (run_cfg.score.dtype, "score.dtype"),
           "score_rows": (run_cfg.score.batch_size, "score.batch_size"),
           # a scored row is a prompt and a chain of at most max_new_tokens; GoGI skips the prompt
           "score_len": (run_cfg.generate.max_new_tokens, "generate.max_new_tokens"),
           "traces": (run_cfg.data.n_train, "data.n_train"), "eval_questions": (run_cfg.data.n_test, "data.n_test"),
           "param_dtype": (tc.param_dtype, student("param_dtype")),
           "compute_dtype": (tc.compute_dtype, student("compute_dtype")),
           "remat": (tc.remat, student("remat")), "lora_rank": (tc.lora.rank, student("lora")),
           "mesh": ((m.data, m.fsdp, m.tensor), student("mesh")),
           "score_mesh": ((sm.data, sm.fsdp, sm.tensor), "score.mesh"),
           "score_remat": (run_cfg.score.remat, "score.remat"),
           # `jaxcot run`'s generate stage puts every device on data (RunStages.mesh)
           "infer_mesh": ((-1, 1, 1), "jaxcot run: generation on a data mesh"),
           "train_rows": (tc.batch_size // tc.grad_accum, student("batch_size") + " / grad_accum"),
           "train_len": (tc.data.max_len, student("data")),
           }
    if run_cfg.score.layers:
        got["score_layer"] = (run_cfg.score.layers[0], "score.layers")
    engine = run_cfg.generate.engine
    if engine.continuous:  # generation runs in the continuous-batching engine: plan its program
        got["engine_slots"] = (engine.slots, "generate.engine.slots")
        got["engine_queue"] = (engine.queue, "generate.engine.queue")
        if engine.eviction.budget:
            got.update({f"engine_{k}": (getattr(engine.eviction, k), f"generate.engine.eviction.{k}")
                        for k in ("budget", "window", "scorer")})
    return got


def plan_config(run_cfg, topology: str, overrides: list[str]):
    """(the PlanConfig of a run: its shapes, dtypes and workloads, then the overrides; where each came from)."""
    from jaxcot.config import apply_overrides, from_dict
    from jaxcot.run.plan import PlanConfig

    got = _from_run(run_cfg)
    base = {"topology": topology, **{k: v for k, (v, _) in got.items()}}
    sources = {k: f"config {src}" for k, (_, src) in got.items()}
    sources.update({o.split("=", 1)[0].strip(): "override" for o in overrides})
    return from_dict(PlanConfig, apply_overrides(base, overrides), "plan"), sources


def run(args) -> int:
    from jaxcot.config import ConfigError, load_config, print_config
    from jaxcot.io import atomic_write_text
    from jaxcot.models.config import ModelConfig
    from jaxcot.run.config import RunConfig
    from jaxcot.run.libtpu import ensure_libtpu
    from jaxcot.run.plan import format_plan, plan

    if not args.config or not args.topology:
        raise ConfigError("", "jaxcot plan needs --config (the run to plan) and --topology, --print-config too")
    run_cfg = load_config(RunConfig, args.config, [])
    folder = arch_folder(run_cfg.model, args.arch, args.config)
    cfg, sources = plan_config(run_cfg, args.topology, [*args.set, *args.overrides])
    if args.print_config:
        print_config(cfg)
        return 0
    ensure_libtpu(say=lambda line: print(line, file=sys.stderr))
    result = plan(ModelConfig.from_hf(folder), cfg, model_name=os.path.basename(os.path.normpath(folder)),
                  sources=sources, fit=args.fit)
    text = format_plan(result, cfg)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0
