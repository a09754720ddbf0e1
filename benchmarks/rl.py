"""GRPO throughput: jaxcot's `grpo` against TRL's GRPOTrainer, same model, same settings, one run.

Both sides start from the same HF folder (default: the testbed teacher shipped in jaxcot, a
1.1M-parameter llama; `--model` takes any local HF folder), ask the same questions with the same
chat template, and run GRPO with LoRA (rank 16, alpha 32, dropout 0.05 on every projection), G
completions per question at temperature 0.6, `--new` new tokens at most, one optimisation
iteration per batch, beta 0, the same correctness reward (jaxcot's grader on both sides).

Per step each side is timed in two parts: the rollout (sampling the completions: jaxcot's compiled
sampler with LoRA merged on the device; TRL's `generate` through transformers) and the rest (the
reward, the log-probabilities and the update). Reported: rollout tokens/s (generated tokens over
rollout seconds) and update tokens/s (prompt + completion tokens over the rest), medians over the
timed steps after `--warmup` steps (jaxcot compiles in those). Order: jaxcot's warm-up, TRL's
warm-up and timed steps (its loop runs them in one call), then jaxcot's timed steps.

    python benchmarks/rl.py                      # teacher, 4 questions x 8 samples, 128 new tokens
    python benchmarks/rl.py --prompts 2 --generations 4 --new 16 --steps 1 --warmup 1

The machine may be shared: compare the ratio column, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import results  # benchmarks/results.py

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a HF folder (default: the shipped testbed teacher)")
    ap.add_argument("--prompts", type=int, default=4, help="questions per step")
    ap.add_argument("--generations", type=int, default=8, help="completions per question (G)")
    ap.add_argument("--new", type=int, default=128, help="max new tokens per completion")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (jaxcot compiles here)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return ap.parse_args()


def questions(n: int) -> list[dict]:
    from jaxcot.testbed.problems import TestbedConfig, generate

    return [{"id": r["id"], "question": r["question"], "gold": r["gold"]}
            for r in generate(n, 7, TestbedConfig(max_value=50))]


class JaxSide:
    """jaxcot's GRPO run, advanced a few steps at a time (resumed from its own checkpoints)."""

    def __init__(self, model: str, qs: list[dict], args, out: str):
        from jaxcot.config import from_dict
        from jaxcot.programs import ProgramCache
        from jaxcot.rl import GRPOConfig

        self.qs, self.cache, self.done = qs, ProgramCache(), 0
        self.cfg = from_dict(GRPOConfig, dict(
            init_from=model, output_dir=out, max_steps=args.warmup + args.steps, prompts_per_step=args.prompts,
            num_generations=args.generations, max_new_tokens=args.new, sampling={"temperature": 0.6}, beta=0.0,
            lora={"rank": 16, "alpha": 32.0, "dropout": 0.05}, optim={"lr": 1e-5, "warmup_ratio": 0.0},
            rewards=[{"name": "correct", "weight": 1.0}], checkpoint={"every": 1, "async_save": False},
            log={"tensorboard": False}, progress=False, export=False, mesh={"devices": 1},
            data={"prompt": {"template": "{question}"}}))

    def run(self, steps: int) -> list[dict]:
        from jaxcot.rl import grpo

        self.done += steps
        res = grpo(self.cfg, questions=self.qs, stop_after=self.done, handle_sigterm=False, cache=self.cache)
        return [dict(rollout_s=r["rollout_s"], rest_s=r["step_s"] - r["rollout_s"], new=r["completion_tokens_total"],
                     total=r["row_tokens"]) for r in res.history]


class TorchSide:
    """TRL's GRPOTrainer with the same settings, stepped through its own `train` loop."""

    def __init__(self, model: str, qs: list[dict], args, out: str):
        import torch
        import transformers as tf
        from datasets import Dataset
        from peft import LoraConfig
        from trl import GRPOConfig, GRPOTrainer

        from jaxcot.text.grading import grade_gsm8k

        if args.threads:
            torch.set_num_threads(args.threads)
        tok = tf.AutoTokenizer.from_pretrained(model)
        tok.padding_side = "left"
        rows = [{"prompt": [{"role": "user", "content": q["question"]}], "gold": q["gold"]} for q in qs]
        n = args.prompts * args.generations

        def correct(prompts, completions, gold, **kw):
            texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
            return [float(grade_gsm8k(t, g)) for t, g in zip(texts, gold)]

        cfg = GRPOConfig(
            output_dir=out, per_device_train_batch_size=n, num_generations=args.generations,
            max_completion_length=args.new, temperature=0.6, learning_rate=1e-5, beta=0.0, num_iterations=1,
            loss_type="grpo", max_steps=args.warmup + 2 * args.steps + 2, logging_strategy="no", report_to="none",
            use_cpu=True, bf16=False, save_strategy="no", seed=0, shuffle_dataset=False,
            disable_tqdm=True, lr_scheduler_type="constant", warmup_steps=0)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        hf = tf.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        self.trainer = GRPOTrainer(model=hf, reward_funcs=[correct], args=cfg, processing_class=tok,
                                   train_dataset=Dataset.from_list(rows * 64), peft_config=lora)
        self.records: list[dict] = []
        generate = self.trainer._generate
        step = self.trainer.training_step
        prepare = self.trainer._prepare_inputs

        def kept_inputs(batch):
            self._inputs = prepare(batch)  # the step's prompt and completion masks, for its token counts
            return self._inputs

        def timed_generate(prompts):
            t0 = time.perf_counter()
            out = generate(prompts)
            self._gen = time.perf_counter() - t0
            return out

        def timed_step(model, inputs, num_items_in_batch=None):
            t0 = time.perf_counter()
            self._gen = 0.0
            loss = step(model, inputs, num_items_in_batch)
            spent = time.perf_counter() - t0
            mask = self._inputs["completion_mask"]
            total = int(self._inputs["prompt_mask"].sum() + mask.sum())
            self.records.append(dict(rollout_s=self._gen, rest_s=spent - self._gen, new=int(mask.sum()), total=total))
            if len(self.records) >= self._stop:
                self.trainer.control.should_training_stop = True
            return loss

        self.trainer._generate = timed_generate
        self.trainer._prepare_inputs = kept_inputs
        self.trainer.training_step = timed_step
        self._stop = 0

    def run_all(self, steps: int) -> None:
        self._stop = steps
        self.trainer.train()


def rates(records: list[dict]) -> tuple[float, float]:
    """(rollout tokens/s, update tokens/s): medians over the steps."""
    return (statistics.median(r["new"] / r["rollout_s"] for r in records),
            statistics.median(r["total"] / r["rest_s"] for r in records))


def main() -> None:
    args = parse_args()
    from jaxcot.runtime import enable_compilation_cache, tune_host_allocator

    tune_host_allocator()
    enable_compilation_cache()
    from jaxcot.testbed.teacher import teacher_path

    model = args.model or teacher_path()
    qs = questions(max(64, args.prompts * (args.warmup + args.steps)))
    with tempfile.TemporaryDirectory() as tmp:
        jax_side = JaxSide(model, qs, args, os.path.join(tmp, "jax"))
        t0 = time.perf_counter()
        jax_side.run(args.warmup)
        jax_warm = time.perf_counter() - t0
        torch_side = TorchSide(model, qs, args, os.path.join(tmp, "trl"))
        torch_side.run_all(args.warmup + args.steps)  # TRL's loop runs its steps in one call
        jax_timed = jax_side.run(args.steps)
    trl_timed = torch_side.records[args.warmup:]
    (jr, ju), (tr, tu) = rates(jax_timed), rates(trl_timed)
    print(f"GRPO on {os.path.basename(model.rstrip('/'))}: {args.prompts} questions x {args.generations} samples, "
          f"<= {args.new} new tokens, LoRA r16, {args.steps} timed steps per side after {args.warmup} "
          f"(jaxcot's warm-up, compiling included: {jax_warm:.1f} s)")
    print("| | jaxcot | TRL GRPOTrainer | ratio |")
    print("|---|---|---|---|")
    print(f"| rollout tokens/s | {jr:.0f} | {tr:.0f} | {jr / tr:.2f}x |")
    print(f"| update tokens/s | {ju:.0f} | {tu:.0f} | {ju / tu:.2f}x |")
    gen = lambda rs: statistics.mean(r["new"] for r in rs)  # noqa: E731
    print(f"mean generated tokens per step: jaxcot {gen(jax_timed):.0f}, TRL {gen(trl_timed):.0f} (different "
          "samples of the same policy: rates, not times, are comparable)")
    results.write("rl", {"model": os.path.basename(model.rstrip("/")), "jaxcot_warmup_s": jax_warm,
                         "jaxcot": jax_timed, "trl": trl_timed},
                  {"rl": results.table(["", "jaxcot", "TRL GRPOTrainer", "ratio"],
                                       [["rollout tokens/s", f"{jr:.0f}", f"{tr:.0f}", f"{jr / tr:.2f}x"],
                                        ["update tokens/s", f"{ju:.0f}", f"{tu:.0f}", f"{ju / tu:.2f}x"]])},
                  args=args)


if __name__ == "__main__":
    main()
