"""`jaxcot run --config configs/demo.yaml [--stages a,b] [key=value ...]`: every stage of the method."""

from __future__ import annotations

import time

from jaxcot import storage
from jaxcot.config import add_command
from jaxcot.run.config import STAGES


def register(subparsers) -> None:
    p = add_command(subparsers, "run", description=__doc__, config="RunConfig",
                    example="student.max_steps=100")
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.set_defaults(func=run)


def run(args) -> int:
    from jaxcot.config import command_config
    from jaxcot.logs import process_index
    from jaxcot.run.config import RunConfig
    from jaxcot.run.runner import run_pipeline

    cfg = command_config(RunConfig, args, [f"stages=[{args.stages}]"] if args.stages else [])
    if cfg is None:
        return 0
    t0 = time.perf_counter()
    out = run_pipeline(cfg)
    if process_index() != 0:  # the others' timings are the same; process 0 speaks for the run
        return 0
    print("\nstage timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in out["timings"].items())
          + f"; total {time.perf_counter() - t0:.0f}s")
    if out["report"]:
        print(out["report"])
        print(f"report: {storage.join(out['root'], 'report.md')}")
    return 0
