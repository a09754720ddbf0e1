"""The testbed teacher: a small decoder trained from scratch on verbose testbed chains.

`train_teacher(TeacherConfig)` generates problems, builds the testbed tokenizer, trains with the
SFT trainer (full fine-tuning of a random init, completion-only loss), measures greedy accuracy on
held-out problems every `eval_every` steps (the learning curve), and exports the model, tokenizer
and log. The shipped teacher in `jaxcot/assets/teacher/` (`teacher_path`) is this command's
output; `check_teacher_task` warns when a run asks it about problems of another task.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

from jaxcot.config import check_choice, check_counts, check_range
from jaxcot.io import atomic_write_json
from jaxcot.testbed.problems import TestbedConfig, generate
from jaxcot.testbed.tokenizer import build_testbed_tokenizer, check_roundtrip, record_texts

DEFAULT_SHAPE = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512)
EVAL_OFFSET = 10_000_000  # held-out problems come from this index range (train uses 0..n_train-1)


@dataclasses.dataclass
class TeacherConfig:
    """steps: optimizer steps (each `batch_size` packed rows of `max_len` tokens).
    eval_every: greedy accuracy on `n_eval` held-out problems every this many steps.
    init_from: a pretrained model (HF folder, GGUF file or alias such as 'smollm2') taught the
    testbed with its own tokenizer and chat template (`model` is then ignored); None: a decoder
    of shape `model` trained from scratch with the testbed's word tokenizer. The chains are the
    same text either way; the ground-truth roles reach any tokenizer's tokens by character
    offsets (`jaxcot.testbed.roles.token_roles`)."""

    out_dir: str = "runs/teacher"
    testbed: TestbedConfig = dataclasses.field(default_factory=TestbedConfig)
    init_from: str | None = None
    # The decoder's shape, as `ModelConfig` fields (llama family; vocab from the tokenizer); keys
    # not given keep DEFAULT_SHAPE's, so `model.hidden_size=64` changes that field only.
    model: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_SHAPE))
    seed: int = 0
    n_train: int = 120_000
    n_eval: int = 300
    steps: int = 4000
    epochs: int = 3  # passes over the problems available; `steps` is the cap that applies
    batch_size: int = 16
    max_len: int = 512
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    eval_every: int = 500
    eval_batch_size: int = 100
    max_new_tokens: int = 320
    export_dtype: str = "float32"

    def __post_init__(self):
        check_counts(self, "n_train", "n_eval", "steps", "epochs", "batch_size", "max_len", "eval_every",
                     "eval_batch_size", "max_new_tokens")
        check_range(self, "lr", 0, lo_open=True)
        check_range(self, "warmup_steps", 0)
        check_range(self, "weight_decay", 0)
        check_choice(self, "export_dtype", ("float32", "bfloat16"))
        self.model = {**DEFAULT_SHAPE, **self.model}
        if self.init_from is None:  # the shape is checked at load (model.hidden_size=-64 names itself)
            teacher_model_config(self, None)


def teacher_examples(records) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: the question as the user turn, chain + answer as the reply."""
    return [(r["question"], r["chain"] + r["answer"]) for r in records]


def greedy_accuracy(model, tokenizer, records, *, batch_size: int = 100, max_new_tokens: int = 320) -> dict:
    """Greedy decoding on `records` (testbed or any {question, gold}); accuracy by GSM8K grading.

    Returns {"accuracy", "n", "mean_new_tokens", "seconds", "examples": first 3 completions}.
    """
    from jaxcot.generate import Generator
    from jaxcot.text.grading import grade_gsm8k

    t0 = time.perf_counter()
    gen = Generator(model, tokenizer)
    outs = gen.generate([r["question"] for r in records], max_new_tokens=max_new_tokens, batch_size=batch_size)
    correct = [grade_gsm8k(o.text, r["gold"]) for o, r in zip(outs, records)]
    return {
        "accuracy": sum(correct) / max(len(correct), 1),
        "n": len(correct),
        "mean_new_tokens": sum(len(o.token_ids) for o in outs) / max(len(outs), 1),
        "seconds": time.perf_counter() - t0,
        "examples": [o.text for o in outs[:3]],
    }


def teacher_model_config(cfg: TeacherConfig, tokenizer):
    """The teacher's `ModelConfig`: `cfg.model` over a tied llama-family decoder sized to the
    tokenizer (head_dim = hidden_size / num_heads unless given). tokenizer None: the shape alone
    (vocab 0), as the config checks it when it loads."""
    from jaxcot.config import from_dict
    from jaxcot.models.config import ModelConfig

    shape = dict(cfg.model)
    hidden, heads = shape.get("hidden_size"), shape.get("num_heads")
    if isinstance(hidden, int) and isinstance(heads, int):  # (a shape that is not valid: ModelConfig names it)
        shape.setdefault("head_dim", hidden // heads if hidden > 0 and heads > 0 else 1)
    base = dict(family="llama", vocab_size=0, max_position_embeddings=cfg.max_len * 2, tie_word_embeddings=True)
    if tokenizer is not None:
        base.update(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    return from_dict(ModelConfig, {**base, **shape}, "model")


def _starting_point(cfg: TeacherConfig, texts) -> tuple:
    """(tokenizer, ModelConfig or None, init_from or None): the testbed's word tokenizer and a
    fresh decoder, or a pretrained model's own tokenizer and weights."""
    if cfg.init_from is None:
        tokenizer = build_testbed_tokenizer(cfg=cfg.testbed)
        check_roundtrip(tokenizer, texts)
        return tokenizer, teacher_model_config(cfg, tokenizer), None
    from jaxcot.models import load_tokenizer
    from jaxcot.models.names import resolve_model

    path = resolve_model(cfg.init_from)
    tokenizer = load_tokenizer(path)
    check_roundtrip(tokenizer, texts)  # the roles reach its tokens through the text, so it must be exact
    return tokenizer, None, path


def train_teacher(cfg: TeacherConfig) -> dict:
    """Train (or resume) the teacher; returns the summary written to `<out_dir>/teacher.json`."""
    from jaxcot.train.config import CheckpointConfig, DataConfig, MeshConfig, OptimConfig, TrainConfig
    from jaxcot.train.loop import train

    os.makedirs(cfg.out_dir, exist_ok=True)
    t_start = time.perf_counter()
    train_records = list(generate(cfg.n_train, cfg.seed, cfg.testbed))
    eval_records = list(generate(cfg.n_eval, cfg.seed, cfg.testbed, offset=EVAL_OFFSET))
    tokenizer, model_cfg, init_from = _starting_point(cfg, record_texts(train_records[:2000] + eval_records))
    train_cfg = TrainConfig(
        output_dir=os.path.join(cfg.out_dir, "train"),
        model=model_cfg,
        init_from=init_from,
        method="full",
        data=DataConfig(max_len=cfg.max_len, packing=True, overflow="drop"),
        optim=OptimConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, min_lr_ratio=0.05),
        mesh=MeshConfig(devices=1),
        checkpoint=CheckpointConfig(every=cfg.eval_every, keep=2),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        max_steps=cfg.steps,
        seed=cfg.seed,
        export=False,  # saved below, with the learning curve beside it
    )
    curve_path = os.path.join(cfg.out_dir, "curve.jsonl")
    curve = []
    if os.path.exists(curve_path):
        with open(curve_path) as f:
            curve = [json.loads(line) for line in f if line.strip()]

    def on_eval(step: int, model) -> None:
        if any(c["step"] == step for c in curve):
            return
        res = greedy_accuracy(model, tokenizer, eval_records, batch_size=cfg.eval_batch_size,
                              max_new_tokens=cfg.max_new_tokens)
        point = {"step": step, "minutes": (time.perf_counter() - t_start) / 60, "accuracy": res["accuracy"],
                 "mean_new_tokens": res["mean_new_tokens"], "eval_seconds": res["seconds"]}
        curve.append(point)
        with open(curve_path, "a") as f:
            f.write(json.dumps(point) + "\n")
        print(f"[teacher] step {step}: greedy accuracy {100 * res['accuracy']:.1f}% on {res['n']} held-out problems "
              f"({res['mean_new_tokens']:.0f} tokens/answer)\n  e.g. {res['examples'][0]!r}", flush=True)

    result = train(train_cfg, tokenizer=tokenizer, examples=teacher_examples(train_records),
                   callback=on_eval, callback_every=cfg.eval_every)
    if result.status != "finished":
        return {"status": result.status, "step": result.step}
    on_eval(result.step, result.model)
    final = curve[-1]
    export_dir = os.path.join(cfg.out_dir, "model")
    import jax.numpy as jnp

    from jaxcot.models.params import save_hf

    save_hf(result.model, export_dir, tokenizer=tokenizer,
            dtype={"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.export_dtype])
    shutil.copy(curve_path, os.path.join(export_dir, "curve.jsonl"))
    summary = {
        "status": "finished",
        "accuracy": final["accuracy"],
        "n_eval": cfg.n_eval,
        "steps": result.step,
        "minutes": (time.perf_counter() - t_start) / 60,
        "params": result.model.config.num_params(),
        "train_tokens_per_step": cfg.batch_size * cfg.max_len,
        "config": dataclasses.asdict(cfg),
        "curve": curve,
    }
    atomic_write_json(os.path.join(export_dir, "teacher.json"), summary)
    atomic_write_json(os.path.join(cfg.out_dir, "teacher.json"), summary)
    return summary


def teacher_path() -> str:
    """The testbed teacher shipped inside the package."""
    from jaxcot.models.names import shipped_teacher_path

    return shipped_teacher_path()


def learned_task(model_path: str) -> TestbedConfig | None:
    """The testbed task a teacher folder learned (its teacher.json), or None without one."""
    from jaxcot.config import from_dict

    summary = os.path.join(model_path, "teacher.json")
    if not os.path.exists(summary):
        return None
    with open(summary) as f:
        learned = json.load(f).get("config", {}).get("testbed")
    return from_dict(TestbedConfig, learned, summary) if learned else None


def check_teacher_task(task: TestbedConfig) -> str | None:
    """A warning naming the fields where `task` differs from the task the shipped teacher learned
    (its teacher.json), or None: problems outside it (e.g. larger numbers) are ones the teacher,
    and every student, mostly gets wrong, which pulls every row of a table down alike."""
    summary = os.path.join(teacher_path(), "teacher.json")
    if not os.path.exists(summary):
        return None
    with open(summary) as f:
        learned = json.load(f).get("config", {}).get("testbed")
    if not learned:
        return None
    ours = json.loads(json.dumps(dataclasses.asdict(task)))  # tuples -> lists, as in the JSON
    diff = {k: (ours.get(k), v) for k, v in learned.items() if ours.get(k) != v}
    if not diff:
        return None
    said = ", ".join(f"{k}={a!r} (teacher: {b!r})" for k, (a, b) in sorted(diff.items()))
    return f"warning: the testbed differs from the task the shipped teacher learned: {said}"
