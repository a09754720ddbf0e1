"""`run_pipeline`: the stages of a `RunConfig` in order, each skipped when done.

A stage is done when its outputs are complete, were made with the current settings and inputs
(their fingerprints, `jaxcot.provenance`) and still hold the bytes their meta recorded when they
were finished; otherwise it runs, and an output made with other settings, or changed since, is
made again (the run says why). The runner never runs one stage inside another: a stage asked for
whose inputs, or anything those were made from (transitively), are missing or out of date is an
error naming the first such output and the stage that writes it. Each stage that ran has its wall
time recorded in `timings.json` in the run folder (the report shows them). One process at a time
may work on a run folder (a lock names the holder). A setting changed for a stage the run leaves
out, whose outputs were made without it, is refused before any stage runs; `config.yaml` is
written when every stage asked for has succeeded, so it holds the settings the outputs on disk
were made with.

Several processes (`distributed.enabled`, one per host of a TPU slice or GPU cluster) run one
`jaxcot run` together on a run folder they all see: each stage runs as its `mode` says
(`jaxcot.run.stages`), every process decides the same stages are done (`agree`), and they meet at
a barrier after each stage; process 0 alone writes the run's own files (timings, config, lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable, Sequence

from jaxcot import distributed, storage
from jaxcot.config import dump_config
from jaxcot.distributed import Share, agree, barrier
from jaxcot.io import atomic_write_json, output_lock
from jaxcot.logs import get_logger
from jaxcot.run.config import RunConfig
from jaxcot.run.stages import RunContext, Stage, stages_for


class StageInputMissing(RuntimeError):
    """A stage was asked for before the stages it reads from are done."""


class StaleSettings(StageInputMissing):
    """A setting was changed for a stage this run does not include, whose outputs were made without it."""


def _why(st: Stage) -> str:
    why = getattr(st, "why_not_done", None)
    return (why() if why is not None else None) or "out of date with the config"


def _check_inputs(st: Stage, stages: Sequence[Stage], root: str) -> None:
    """Every input `st` reads, and every input those were made from (transitively), exists and is
    up to date with the config; else one line names the first that is not and the stage to run."""
    writers = {out: w for w in stages for out in w.outputs()}
    todo, seen = [(st, rel) for rel in st.inputs()], set()
    while todo:
        reader, rel = todo.pop(0)
        writer = writers.get(rel) or writers.get(os.path.dirname(rel))
        if not os.path.exists(os.path.join(root, rel)):
            via = "" if reader is st else f" (stage {reader.name}'s input, which its outputs were made from)"
            raise StageInputMissing(f"stage {st.name} needs {os.path.join(root, rel)}{via}, which stage "
                                    f"{writer.name if writer else '?'} writes: run that stage first")
        if writer is None or writer.name in seen:
            continue
        seen.add(writer.name)
        if not writer.done():
            what = rel if reader is st else f"what stage {reader.name} made from {rel}"
            raise StageInputMissing(f"stage {st.name} reads {what}; stage {writer.name} is not up to date with the "
                                    f"config ({_why(writer)}): run stage {writer.name} first")
        todo += [(writer, r) for r in writer.inputs()]


def _check_settings(stages: Sequence[Stage], want: Sequence[str]) -> None:
    """A stage this run leaves out keeps its outputs only if they were made with the config's
    settings: else config.yaml would describe settings no stage applied. One line names the first
    output made otherwise, the settings, and the stage to include."""
    for st in stages:
        changed = getattr(st, "changed_settings", None)
        if st.name in want or changed is None or (found := changed()) is None:
            continue
        rel, diffs = found
        raise StaleSettings(f"{rel} was made by stage {st.name} with other settings ({', '.join(diffs)}), and this "
                            f"run does not include stage {st.name}: add it to the stages, or set those back")


def run_stages(stages: Sequence[Stage], want: Sequence[str], root: str,
               say: Callable[[str], None] = print, after: Callable[[], object] | None = None,
               share: Share = Share()) -> dict[str, float]:
    """Run the stages named in `want`, in order; returns {name: seconds} of those that ran.
    `after` is called when each stage has finished (a remote run folder pushes its outputs).
    share: this process of a multi-process run (see the module docstring)."""
    timings_path = os.path.join(root, "timings.json")
    recorded = {}
    if os.path.exists(timings_path):
        with open(timings_path) as f:
            recorded = json.load(f)
    ran: dict[str, float] = {}
    _check_settings(stages, want)
    for st in stages:
        if st.name not in want or not st.outputs():  # (a stage with nothing to make: no GRPO rows)
            continue
        if agree(st.done(), f"stage {st.name} done"):
            outs = st.outputs()
            say(f"{st.name}: done, reusing {', '.join(outs[:3])}{' ...' if len(outs) > 3 else ''}")
            continue
        _check_inputs(st, stages, root)
        say(f"{st.name}: running" + (f" ({_MODES[st.mode]})" if share.count > 1 else ""))
        t0 = time.perf_counter()
        if share.lead or st.mode != "lead":
            st.run()
        if share.count > 1:
            barrier(f"{st.name} ran")
            if st.mode == "shares" and share.lead:
                st.gather()
            barrier(f"{st.name} gathered")
        ran[st.name] = time.perf_counter() - t0
        recorded[st.name] = ran[st.name]
        if share.lead:
            atomic_write_json(timings_path, recorded)
            if after is not None:
                after()
    return ran


_MODES = {"lead": "on process 0", "shares": "each process its share", "together": "every process together"}


def run_pipeline(cfg: RunConfig, say: Callable[[str], None] | None = None) -> dict:
    """Run `cfg.stages` of `cfg` in `<runs_dir>/<name>/`; returns {"root", "timings", "report"}
    (the report's text when the report stage ran, on process 0). `runs_dir` may be a remote URL (gs://...):
    the run works in a local copy and pushes after every stage (`jaxcot.storage`)."""
    say = say or get_logger("run").info
    distributed.initialize(cfg.distributed)
    share = Share.of_this_process()
    folder = storage.join(cfg.runs_dir, cfg.name)
    if share.count > 1:
        _check_multiprocess(cfg, folder)
    with storage.local_folder(folder) as (root, remote):
        os.makedirs(root, exist_ok=True)
        with output_lock(root) if share.lead else contextlib.nullcontext():
            ctx = RunContext(cfg, root, say, share=share)
            if not os.path.exists(ctx.model_path):  # before any stage: a typo should not cost the stages before it
                raise FileNotFoundError(f"model: {cfg.model}: no such HF model folder or GGUF file")
            timings = run_stages(stages_for(ctx), cfg.stages, root, say, after=remote and remote.push, share=share)
            if share.lead:
                dump_config(cfg, os.path.join(root, "config.yaml"))
        report = None
        if "report" in cfg.stages and share.lead:
            with open(os.path.join(root, "report.md")) as f:
                report = f.read()
    return {"root": folder, "timings": timings, "report": report}


def _check_multiprocess(cfg: RunConfig, folder: str) -> None:
    if storage.is_remote(folder):
        raise ValueError(f"runs_dir: {cfg.runs_dir}: a multi-process run works in a folder every host sees "
                         "(a shared file system, or the bucket mounted with gcsfuse); a remote URL is mirrored "
                         "through one host's local copy, which the others cannot see")


__all__ = ["StageInputMissing", "StaleSettings", "run_pipeline", "run_stages"]
