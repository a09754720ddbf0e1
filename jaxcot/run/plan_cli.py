"""`jaxcot plan --config configs/gemma3-4b-math.yaml --topology v5e:2x4 [key=value ...]`: compile
the run's LoRA train step, GoGI pass and generation for a TPU topology, without a TPU, and print
the memory per device against the chip's HBM and the hours for the run's workloads.

The architecture comes from the config's model folder (its config.json) or, where that folder is
not on this host, from configs/arch/<its name>/config.json (the published configs of the paper's
models). Shapes and workloads default to the run config's (generate batch and length, score
layer, LoRA rank, questions); key=value overrides set any PlanConfig field (train_rows=32,
mesh=[2,4,1], mfu=0.5). Needs libtpu: pip install 'jaxcot[plan]'.
"""

from __future__ import annotations

import os

from jaxcot.config import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", description=__doc__, formatter_class=HelpFormatter,
                              help="compile a run's programs for a TPU topology: memory per device and hours")
    p.add_argument("--config", required=True, help="YAML RunConfig (e.g. configs/gemma3-4b-math.yaml)")
    p.add_argument("--topology", required=True, help="TPU slice, e.g. v5e:2x4, v4:2x2x2, v5p:2x2x2")
    p.add_argument("--arch", help="a folder with the model's config.json (default: the config's model, else "
                                  "configs/arch/<its name>)")
    p.add_argument("--out", help="also write the table to this Markdown file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="PlanConfig fields, e.g. train_rows=32")
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


def plan_config(run_cfg, topology: str, overrides: list[str]):
    """The PlanConfig of a run: its shapes and workloads, then the overrides."""
    from jaxcot.config import apply_overrides, from_dict
    from jaxcot.run.plan import PlanConfig

    base = {"topology": topology, "new_tokens": run_cfg.generate.max_new_tokens,
            "decode_rows": run_cfg.generate.batch_size, "traces": run_cfg.data.n_train,
            "eval_questions": run_cfg.data.n_test}
    if run_cfg.score.layers:
        base["score_layer"] = run_cfg.score.layers[0]
    rank = (run_cfg.student.get("lora") or {}).get("rank")
    if rank:
        base["lora_rank"] = rank
    return from_dict(PlanConfig, apply_overrides(base, overrides), "plan")


def run(args) -> int:
    from jaxcot.config import load_config
    from jaxcot.io import atomic_write_text
    from jaxcot.models.config import ModelConfig
    from jaxcot.run.config import RunConfig
    from jaxcot.run.plan import format_plan, plan

    run_cfg = load_config(RunConfig, args.config, [])
    folder = arch_folder(run_cfg.model, args.arch, args.config)
    cfg = plan_config(run_cfg, args.topology, list(args.overrides))
    result = plan(ModelConfig.from_hf(folder), cfg, model_name=os.path.basename(os.path.normpath(folder)))
    text = format_plan(result, cfg)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0
