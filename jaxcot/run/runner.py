"""`run_pipeline`: the stages of a `RunConfig` in order, each skipped when done.

The runner never runs one stage inside another: a stage whose inputs are missing is an error
naming the stage that writes them. Each stage that ran has its wall time recorded in
`timings.json` in the run folder (the report shows them).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

from jaxcot.config import dump_config
from jaxcot.io import atomic_write_json
from jaxcot.run.config import RunConfig
from jaxcot.run.stages import RunContext, Stage, stages_for


class StageInputMissing(RuntimeError):
    """A stage was asked for before the stages it reads from have run."""


def run_stages(stages: Sequence[Stage], want: Sequence[str], root: str,
               say: Callable[[str], None] = print) -> dict[str, float]:
    """Run the stages named in `want`, in order; returns {name: seconds} of those that ran."""
    timings_path = os.path.join(root, "timings.json")
    recorded = {}
    if os.path.exists(timings_path):
        with open(timings_path) as f:
            recorded = json.load(f)
    writers = {out: st.name for st in stages for out in st.outputs()}
    ran: dict[str, float] = {}
    for st in stages:
        if st.name not in want:
            continue
        if st.done():
            say(f"{st.name}: done, reusing {', '.join(st.outputs()[:3])}{' ...' if len(st.outputs()) > 3 else ''}")
            continue
        missing = [p for p in st.inputs() if not os.path.exists(os.path.join(root, p))]
        if missing:
            raise StageInputMissing(f"stage {st.name} needs {os.path.join(root, missing[0])}, which stage "
                                    f"{writers.get(missing[0], '?')} writes: run that stage first")
        t0 = time.perf_counter()
        st.run()
        ran[st.name] = time.perf_counter() - t0
        recorded[st.name] = ran[st.name]
        atomic_write_json(timings_path, recorded)
    return ran


def run_pipeline(cfg: RunConfig, say: Callable[[str], None] | None = None) -> dict:
    """Run `cfg.stages` of `cfg` in `<runs_dir>/<name>/`; returns {"root", "timings", "report"}
    (the report's text when the report stage ran)."""
    say = say or (lambda msg: print(f"[jaxcot run] {msg}", flush=True))
    root = os.path.join(cfg.runs_dir, cfg.name)
    os.makedirs(root, exist_ok=True)
    dump_config(cfg, os.path.join(root, "config.yaml"))
    ctx = RunContext(cfg, root, say)
    timings = run_stages(stages_for(ctx), cfg.stages, root, say)
    report = None
    if "report" in cfg.stages:
        with open(os.path.join(root, "report.md")) as f:
            report = f.read()
    return {"root": root, "timings": timings, "report": report}


__all__ = ["StageInputMissing", "run_pipeline", "run_stages"]
