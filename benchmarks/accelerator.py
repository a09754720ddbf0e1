"""Accelerator benchmark: jaxcot vs transformers + PyTorch at Qwen2.5-1.5B and -7B shapes on one GPU.

Random weights in bfloat16 (the architecture from configs/arch/<name>/config.json where there is
one, else Qwen2.5's published numbers), the same random tokens on both sides, three tasks:

- ``decode``: greedy generation of exactly `--new` tokens after a `--prompt`-token prompt, at each
  of `--batches`. jaxcot: `Generator.generate_ids` (no EOS); torch: `model.generate` with
  `min_new_tokens` (`--torch-cache`: transformers' default dynamic cache, or its static cache,
  which transformers compiles with torch.compile on CUDA). tokens/s = batch * new / seconds; the
  prefill is inside the time. HBM fraction = (weight bytes + the KV bytes of the mean cache
  length) per step / (seconds / new) / peak bandwidth: a lower bound on the decode steps' own.
- ``gogi``: the GoGI pass over `--gogi` BxT tokens laid out prompt (T/8) | chain | answer (T/8),
  at the default layer. jaxcot: the program `gogi_scores` runs (`jaxcot.importance.gogi.scores_program()`,
  lowered and compiled here so that its FLOPs can be read); torch: a zero perturbation with
  requires_grad added at that layer by a forward hook, the answer loss's backward, the chain's
  entropy under no_grad (as benchmarks/importance.py).
- ``train``: one LoRA SFT step (rank 8, alpha 16, all seven projections, float32 adapters over
  frozen bf16 weights, AdamW, clipping at 1.0, loss on the second half) on `--train` BxT tokens.
  jaxcot: `make_train_step`; torch: forward, backward, clipping and a fused AdamW step, with peft's
  LoRA (`--lora auto`: peft if installed, else small torch adapters written here).

MFU = FLOPs / seconds / peak bf16 dense FLOP/s. FLOPs: XLA's cost analysis of jaxcot's compiled
program (the count `flops_analytic` cross-checks: matmuls and dense causal attention, forward and
input gradients, no weight gradients as the weights are frozen); the torch row is charged the
same FLOPs (the same work). Peaks by device kind (H100 SXM 3.35 TB/s and 989 TFLOP/s, H100 PCIe
2.0 / 756, H200 4.8 / 989, A100 80GB 2.0 / 312); any other device: a measured device copy
(read + write) and a measured bf16 matmul, so the fractions are of what this device showed.

Each step is a stage with its own deadline, the rest of `--budget` seconds (counted from process
start); a stage that runs out of memory or time is recorded (status oom / timeout) and the run goes
on; stages after the budget are recorded as skipped. A stage's alarm fires only between Python
calls, so a watchdog 20 s past the budget writes the table and JSON of what is done and exits.
Times: medians of `--repeats` runs after a warm-up (jaxcot's warm-up run compiles; its compile time
is reported apart). Per size, torch runs first and frees its memory, as jaxcot's allocator keeps
what it took (and does not take 75% of the GPU up front: XLA_PYTHON_CLIENT_PREALLOCATE=false).

    python benchmarks/accelerator.py --sizes 1.5b,7b --out runs/accelerator.json
    python benchmarks/accelerator.py --tiny --out /tmp/acc.json     # a 2-layer width-64 model on CPU
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import gc
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import results  # benchmarks/results.py
import torch
import torch.nn.functional as F
import transformers
from flax import nnx

from jaxcot.generate import Generator, SamplingConfig
from jaxcot.importance import gogi
from jaxcot.models import ModelConfig, RopeConfig
from jaxcot.runtime import process_seconds
from jaxcot.sharding import make_mesh
from jaxcot.train.config import LINEAR_LAYERS, OptimConfig
from jaxcot.train.loop import init_sharded
from jaxcot.train.lora import apply_lora
from jaxcot.train.runtime import place
from jaxcot.train.step import make_optimizer, make_train_step, split_model, step_shardings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, published shape): configs/arch/<name>/config.json wins where it exists.
ARCH = {
    "1.5b": ("Qwen2.5-1.5B-Instruct", dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28,
                                           num_heads=12, num_kv_heads=2, tie_word_embeddings=True)),
    "7b": ("Qwen2.5-7B-Instruct", dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                                       num_heads=28, num_kv_heads=4, tie_word_embeddings=False)),
    "tiny": ("tiny", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                          num_kv_heads=2, tie_word_embeddings=True)),
}
# (substrings of the device kind, HBM bytes/s, bf16 dense FLOP/s); the first match wins.
PEAKS = [
    (("H200",), 4.8e12, 989e12),
    (("H100", "PCIe"), 2.0e12, 756e12),
    (("H100", "SXM"), 3.35e12, 989e12),
    (("H100", "HBM3"), 3.35e12, 989e12),  # the SXM part reports itself as "NVIDIA H100 80GB HBM3"
    (("A100", "80GB"), 2.0e12, 312e12),
]
LORA_RANK, LORA_ALPHA = 8, 16.0
MIN_STAGE_S = 5.0  # a stage needs at least this much of the budget to start
GRACE_S = 20.0  # past the budget, the watchdog reports and exits
PROGRESS: dict = {"stage": None}  # the stage running now, for the watchdog's report
REPORT_LOCK = threading.Lock()  # the report is written once, by the main thread or the watchdog


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1.5b,7b", help="comma-separated: 1.5b, 7b")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer width-64 model, small shapes, on CPU (tests)")
    ap.add_argument("--batches", default="1,64", help="decode batch sizes")
    ap.add_argument("--prompt", type=int, default=64, help="decode prompt tokens")
    ap.add_argument("--new", type=int, default=128, help="decode new tokens")
    ap.add_argument("--gogi", default="4x512", help="GoGI batch x tokens")
    ap.add_argument("--train", default="4x512", help="train step batch x tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=450.0, help="seconds from process start; what is left is skipped")
    ap.add_argument("--torch-cache", default="dynamic", choices=["dynamic", "static"],
                    help="transformers' KV cache for generate (static: torch.compile'd by transformers on CUDA)")
    ap.add_argument("--lora", default="auto", choices=["auto", "peft", "own"], help="the torch LoRA")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="both frameworks on CPU")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.sizes, args.batches, args.prompt, args.new = "tiny", "1,4", 16, 8
        args.gogi, args.train, args.repeats, args.cpu = "2x64", "2x64", 2, True
    args.sizes = [s for s in args.sizes.split(",") if s]
    bad = [s for s in args.sizes if s not in ARCH]
    if bad:
        ap.error(f"unknown sizes {bad}; known: {sorted(ARCH)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.gogi = tuple(int(x) for x in args.gogi.split("x"))
    args.train = tuple(int(x) for x in args.train.split("x"))
    return args


# -- shapes, peaks, FLOP and byte counts -------------------------------------------------------


def model_config(size: str):
    """(ModelConfig, where its numbers came from)."""
    name, shape = ARCH[size]
    folder = os.path.join(ROOT, "configs", "arch", name)
    if os.path.isfile(os.path.join(folder, "config.json")):
        return ModelConfig.from_hf(folder), os.path.relpath(folder, ROOT)
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0) if size == "tiny" else \
        dict(bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    cfg = ModelConfig(family="qwen2", head_dim=shape["hidden_size"] // shape["num_heads"], rms_norm_eps=1e-6,
                      rope=RopeConfig(theta=1e6), max_position_embeddings=32768, attention_bias=True, **ids, **shape)
    return cfg, "published" if size != "tiny" else "tiny"


def block_matmul_params(cfg) -> int:
    d, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return 2 * d * q + 2 * d * kv + 3 * d * cfg.intermediate_size


def gogi_flops(cfg, b: int, t: int, split: int, answer: int, layer: int) -> float:
    """Matmul FLOPs of jaxcot's GoGI pass: the prompt prefill (slots < split), the forward of the
    rest against all t keys, the input-gradient backward of blocks layer+1..L, the LM head on every
    scored row (entropy) and forward + input gradient on the answer rows (loss)."""
    p, q, n, dv, L = block_matmul_params(cfg), cfg.num_heads * cfg.head_dim, t - split, \
        cfg.hidden_size * cfg.vocab_size, cfg.num_layers
    prefill = L * (2 * p * b * split + 4 * b * split * split * q)
    forward = L * (2 * p * b * n + 4 * b * n * t * q)
    backward = (L - layer) * (2 * p * b * n + 8 * b * n * t * q)
    return float(prefill + forward + backward + 2 * b * n * dv + 4 * b * answer * dv)


def train_flops(cfg, b: int, t: int) -> float:
    """Matmul FLOPs of a LoRA step: forward and input gradients (4 x params x tokens, attention 3x
    its forward), no weight gradients of the frozen weights (the rank-8 factors' are left out)."""
    p, q, dv = block_matmul_params(cfg), cfg.num_heads * cfg.head_dim, cfg.hidden_size * cfg.vocab_size
    return float(cfg.num_layers * (4 * p * b * t + 12 * b * t * t * q) + 4 * b * t * dv)


def decode_bytes(cfg, batch: int, prompt: int, new: int, itemsize: int = 2) -> float:
    """Bytes a decode step reads: every weight a step multiplies with (a tied table as the LM head;
    an untied input table is only gathered) and the KV cache at its mean length."""
    weights = cfg.num_params() - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
    kv_token = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim
    return float(itemsize * (weights + batch * (prompt + new / 2) * kv_token))


def measured_bandwidth(device, nbytes: int) -> float:
    """Bytes/s of a jitted device copy (x + 1: read + write), best of 10."""
    x = jax.device_put(jnp.ones(nbytes // 4, jnp.float32), device)
    f = jax.jit(lambda a: a + 1)
    f(x).block_until_ready()
    best = min(timed(lambda: f(x).block_until_ready()) for _ in range(10))
    return 2 * nbytes / best


def measured_flops(device, n: int) -> float:
    """FLOP/s of a jitted n x n bf16 matmul, best of 10."""
    a = jax.device_put(jnp.ones((n, n), jnp.bfloat16), device)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    return 2.0 * n**3 / min(timed(lambda: f(a).block_until_ready()) for _ in range(10))


def device_peaks(device) -> dict:
    kind = device.device_kind
    for parts, bw, flops in PEAKS:
        if device.platform == "gpu" and all(p in kind for p in parts):
            return dict(bandwidth=bw, flops=flops, source=f"table ({' '.join(parts)})")
    big = device.platform != "cpu"
    return dict(bandwidth=measured_bandwidth(device, 1 << (29 if big else 26)),
                flops=measured_flops(device, 4096 if big else 512), source="measured (copy, bf16 matmul)")


# -- timing and stages -------------------------------------------------------------------------


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls (the caller has run the warm-up); fn waits for its work."""
    return statistics.median(timed(fn) for _ in range(repeats))


class StageTimeout(BaseException):
    """Raised by the alarm at a stage's deadline (a BaseException: library code's `except Exception`
    must not swallow it)."""


def _alarm(signum, frame):
    raise StageTimeout()


def budget_left(args) -> float:
    return args.budget - process_seconds()


def run_stage(args, name: str, fn) -> dict:
    """{'status': 'ok', **fn()} or the status of its failure: 'oom', 'timeout' (past the budget),
    'skipped' (no budget left), 'error'; with a note."""
    left = budget_left(args)
    if left < MIN_STAGE_S:
        return dict(status="skipped", note=f"time budget ({args.budget:.0f} s) spent")
    PROGRESS["stage"] = name
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, left)
    try:
        return dict(status="ok", **fn())
    except StageTimeout:
        return dict(status="timeout", note=f"past the time budget ({args.budget:.0f} s)")
    except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
        text = f"{type(e).__name__}: {e}"
        oom = "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OutOfMemory" in text
        return dict(status="oom" if oom else "error", note=text[:400])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        PROGRESS["stage"] = None


def framework_rows(args, label: str, build, tasks, rows: list) -> None:
    """Build a model (a stage), then run each task (task, shape, fn(model)) as a stage, appending a
    row each; a failed build gives every task its status. Frees the memory after."""
    built = run_stage(args, f"{label} build", lambda: dict(model=build()))
    model = built.pop("model", None)
    for task, shape, fn in tasks:
        result = dict(built) if model is None else \
            run_stage(args, f"{label} {task} {'x'.join(map(str, shape))}", functools.partial(fn, model))
        rows.append(row(label.split()[-1], task, *shape, **result))
    model = None
    free_memory()


def start_watchdog(args, report) -> None:
    """GRACE_S after the budget (a stage blocked in one long compile or device call, which its alarm
    cannot interrupt until the call returns), report what is done and exit."""

    def fire():
        if not REPORT_LOCK.acquire(blocking=False):
            return  # the report is being written
        print(f"\nhard stop: {GRACE_S:.0f} s past the budget, in {PROGRESS['stage']}", flush=True)
        try:
            report(cut=PROGRESS["stage"], locked=True)
        finally:
            os._exit(0)

    timer = threading.Timer(max(budget_left(args) + GRACE_S, 0.0), fire)
    timer.daemon = True
    timer.start()


def free_memory() -> None:
    gc.collect()
    jax.clear_caches()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- inputs (the same for both sides) ----------------------------------------------------------


def prompt_tokens(cfg, batch: int, length: int):
    return np.random.default_rng(batch).integers(3, cfg.vocab_size, (batch, length)).astype(np.int32)


def gogi_inputs(cfg, b: int, t: int):
    """tokens, mask, chain, answer [b, t]: prompt t/8 | chain | answer t/8."""
    tokens = prompt_tokens(cfg, b, t)
    mask = np.ones((b, t), bool)
    chain, answer = np.zeros((b, t), bool), np.zeros((b, t), bool)
    chain[:, t // 8: t - t // 8] = True
    answer[:, t - t // 8:] = True
    return tokens, mask, chain, answer


def train_inputs(cfg, b: int, t: int) -> dict:
    """One micro-batch [1, b, t] as `jaxcot.data.sft` lays it out; loss on the second half."""
    tokens = prompt_tokens(cfg, b, t)[None]
    loss_mask = np.zeros(tokens.shape, bool)
    loss_mask[..., t // 2:] = True
    return dict(tokens=tokens, mask=np.ones_like(loss_mask), segments=np.ones(tokens.shape, np.int32),
                positions=np.broadcast_to(np.arange(t, dtype=np.int32), tokens.shape).copy(), loss_mask=loss_mask)


# -- jaxcot ------------------------------------------------------------------------------------


def xla_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def jax_model(cfg, mesh):
    return init_sharded(cfg, 0, mesh, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)


def jax_decode(model, mesh, cfg, batch: int, args) -> dict:
    gen = Generator(model, None, mesh=mesh, eos_ids=())
    prompts = prompt_tokens(cfg, batch, args.prompt).tolist()
    run = lambda: gen.generate_ids(prompts, max_new_tokens=args.new, sampling=SamplingConfig())
    out = run()  # compiles; the warm-up
    assert all(len(c.token_ids) == args.new for c in out), "a row stopped early"
    return dict(seconds=median_time(run, args.repeats), compile_s=gen.compile_seconds)


def jax_gogi(model, device, cfg, args) -> dict:
    b, t = args.gogi
    host = gogi_inputs(cfg, b, t)
    arrays = [jax.device_put(x, device) for x in host]
    layer, split = gogi.default_layer(cfg.num_layers), gogi.prompt_split(host[2], host[3])
    graphdef, state = nnx.split(model)
    t0 = time.perf_counter()
    compiled = gogi.scores_program().lower(graphdef, state, *arrays, layers=(layer,), norm="l1", max_answer=t // 8,
                                  per_layer=False, split=split).compile()
    compile_s = time.perf_counter() - t0
    run = lambda: jax.block_until_ready(compiled(state, *arrays))
    run()
    return dict(seconds=median_time(run, args.repeats), compile_s=compile_s, flops=xla_flops(compiled),
                layer=layer, split=split)


def jax_train(model, mesh, cfg, args) -> dict:
    """One LoRA step as `jaxcot train` runs it (attaches the adapters to `model`: run it last)."""
    apply_lora(model, rank=LORA_RANK, alpha=LORA_ALPHA, targets=LINEAR_LAYERS, seed=1, param_dtype=jnp.float32)
    graphdef, params, frozen = split_model(model, "lora")
    optim = OptimConfig(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0, clip_norm=1.0)
    tx, schedule = make_optimizer(optim, 1000)
    sh = step_shardings(mesh, params, frozen, jax.eval_shape(tx.init, params))
    params, frozen = place(params, sh.params), place(frozen, sh.frozen)
    opt_state = jax.jit(tx.init, out_shardings=sh.opt_state)(params)
    batch = {k: jax.device_put(v, sh.batch) for k, v in train_inputs(cfg, *args.train).items()}
    step0 = jnp.asarray(0, jnp.int32)
    t0 = time.perf_counter()
    compiled = make_train_step(graphdef, tx, schedule, sh, packed=False).lower(
        params, opt_state, frozen, batch, step0).compile()
    compile_s = time.perf_counter() - t0
    state = {"params": params, "opt": opt_state}

    def run():
        state["params"], state["opt"], m = compiled(state["params"], state["opt"], frozen, batch, step0)
        float(m["loss"])

    run()
    return dict(seconds=median_time(run, args.repeats), compile_s=compile_s, flops=xla_flops(compiled))


def jax_rows(cfg, device, args, rows: list, size: str) -> None:
    mesh = make_mesh(devices=[device])
    tasks = [("decode", (b, args.prompt, args.new), functools.partial(jax_decode, mesh=mesh, cfg=cfg, batch=b,
                                                                      args=args)) for b in args.batches]
    tasks += [("gogi", args.gogi, functools.partial(jax_gogi, device=device, cfg=cfg, args=args)),
              ("train", args.train, functools.partial(jax_train, mesh=mesh, cfg=cfg, args=args))]
    with jax.default_device(device):
        framework_rows(args, f"{size} jaxcot", lambda: jax_model(cfg, mesh), tasks, rows)


# -- transformers + PyTorch --------------------------------------------------------------------


def torch_sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def torch_model(cfg, dev):
    """transformers' model of this architecture, random init, bf16, built on `dev`."""
    hf_cfg = transformers.AutoConfig.for_model(**cfg.to_hf_dict())
    torch.manual_seed(0)
    with torch.device(dev):
        try:
            hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16)
        except TypeError:  # transformers < 4.56
            hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, torch_dtype=torch.bfloat16)
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf.to(dev, torch.bfloat16).eval()


def torch_decode(hf, dev, cfg, batch: int, args) -> dict:
    ids = torch.as_tensor(prompt_tokens(cfg, batch, args.prompt), dtype=torch.long, device=dev)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.new, min_new_tokens=args.new,
              do_sample=False, pad_token_id=cfg.pad_token_id or 0)
    if args.torch_cache == "static":
        kw["cache_implementation"] = "static"

    def run():
        with torch.inference_mode():
            out = hf.generate(ids, **kw)
        torch_sync(dev)
        assert out.shape[1] == args.prompt + args.new, out.shape

    run()
    return dict(seconds=median_time(run, args.repeats), cache=args.torch_cache)


def torch_gogi_pass(hf, dev, tokens, chain, answer, layer: int):
    """GoGI as a careful PyTorch user would compute it (see benchmarks/importance.py's torch_gogi)."""
    b, t = tokens.shape
    delta = torch.zeros(b, t, hf.config.hidden_size, dtype=torch.bfloat16, device=dev, requires_grad=True)

    def hook(module, inputs, out):
        return (out[0] + delta,) + tuple(out[1:]) if isinstance(out, tuple) else out + delta

    module = hf.model.embed_tokens if layer == 0 else hf.model.layers[layer - 1]
    handle = module.register_forward_hook(hook)
    try:
        hidden = hf.model(input_ids=tokens).last_hidden_state[:, :-1]
        rows = answer[:, 1:]
        logp = torch.log_softmax(hf.lm_head(hidden[rows]).float(), -1)
        loss = -torch.gather(logp, 1, tokens[:, 1:][rows][:, None]).sum()
        loss.backward()
        with torch.no_grad():
            logp_c = torch.log_softmax(hf.lm_head(hidden[chain[:, 1:]]).float(), -1)
            entropy = -(logp_c.exp() * logp_c).sum(-1)
        scores = delta.grad.float().abs().sum(-1) * chain
        torch_sync(dev)
        return scores, entropy
    finally:
        handle.remove()


def torch_gogi(hf, dev, cfg, args) -> dict:
    tokens, _, chain, answer = gogi_inputs(cfg, *args.gogi)
    tt = torch.as_tensor(tokens, dtype=torch.long, device=dev)
    tc, ta = torch.as_tensor(chain, device=dev), torch.as_tensor(answer, device=dev)
    run = lambda: torch_gogi_pass(hf, dev, tt, tc, ta, gogi.default_layer(cfg.num_layers))
    run()
    return dict(seconds=median_time(run, args.repeats))


class LoraLinear(torch.nn.Module):
    """y = base(x) + x @ a @ b * alpha / rank, float32 factors (the LoRA without peft)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        kw = dict(device=base.weight.device, dtype=torch.float32)
        self.a = torch.nn.Parameter(torch.randn(base.in_features, rank, **kw) / rank**0.5)
        self.b = torch.nn.Parameter(torch.zeros(rank, base.out_features, **kw))

    def forward(self, x):
        return self.base(x) + ((x.float() @ self.a) @ self.b * self.scale).to(x.dtype)


def with_lora(hf, how: str):
    """(model, trainable parameters, 'peft' or 'own'): rank-8 LoRA on every projection."""
    if how == "peft" or (how == "auto" and importlib.util.find_spec("peft") is not None):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(hf, LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                              target_modules=list(LINEAR_LAYERS), task_type="CAUSAL_LM"))
        return model, [p for p in model.parameters() if p.requires_grad], "peft"
    for module in list(hf.modules()):
        for name, child in list(module.named_children()):
            if name in LINEAR_LAYERS:
                setattr(module, name, LoraLinear(child, LORA_RANK, LORA_ALPHA))
    return hf, [p for p in hf.parameters() if p.requires_grad], "own"


def torch_train(hf, dev, cfg, args) -> dict:
    """Forward, backward, clipping and AdamW on the adapters (attaches them to `hf`: run it last)."""
    model, params, lora = with_lora(hf, args.lora)
    model.train()
    host = train_inputs(cfg, *args.train)
    ids = torch.as_tensor(host["tokens"][0], dtype=torch.long, device=dev)
    w = torch.as_tensor(host["loss_mask"][0][:, 1:], dtype=torch.float32, device=dev).reshape(-1)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)

    def run():
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        loss = (nll * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss.item()

    run()
    return dict(seconds=median_time(run, args.repeats), lora=lora)


def torch_rows(cfg, dev, args, rows: list, size: str) -> None:
    tasks = [("decode", (b, args.prompt, args.new), functools.partial(torch_decode, dev=dev, cfg=cfg, batch=b,
                                                                      args=args)) for b in args.batches]
    tasks += [("gogi", args.gogi, functools.partial(torch_gogi, dev=dev, cfg=cfg, args=args)),
              ("train", args.train, functools.partial(torch_train, dev=dev, cfg=cfg, args=args))]
    framework_rows(args, f"{size} torch", lambda: torch_model(cfg, dev), tasks, rows)


# -- results -----------------------------------------------------------------------------------


def row(framework: str, task: str, batch: int, seq: int, new: int | None = None, **result) -> dict:
    return dict(framework=framework, task=task, batch=batch, seq=seq, new=new, **result)


def analytic_flops(cfg, task: str, args) -> float:
    if task == "train":
        return train_flops(cfg, *args.train)
    b, t = args.gogi
    _, _, chain, answer = gogi_inputs(cfg, b, t)
    return gogi_flops(cfg, b, t, gogi.prompt_split(chain, answer), t // 8, gogi.default_layer(cfg.num_layers))


def add_metrics(rows: list[dict], cfg, peaks: dict, args) -> None:
    """tokens/s, and the HBM fraction (decode) or MFU (gogi, train). MFU's FLOPs: XLA's count of
    jaxcot's program for the task, else the analytic count; a torch row is charged the same (the
    same work)."""
    xla = {r["task"]: r.get("flops") for r in rows if r["framework"] == "jaxcot" and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        s = r["seconds"]
        if r["task"] == "decode":
            r["tokens_per_s"] = r["batch"] * r["new"] / s
            r["bytes_per_step"] = decode_bytes(cfg, r["batch"], r["seq"], r["new"])
            r["hbm_fraction"] = r["bytes_per_step"] / (s / r["new"]) / peaks["bandwidth"]
            continue
        r["tokens_per_s"] = r["batch"] * r["seq"] / s
        r["flops_analytic"] = analytic_flops(cfg, r["task"], args)
        r["flops_used"] = xla.get(r["task"]) or r["flops_analytic"]
        r["flops_source"] = "xla" if xla.get(r["task"]) else "analytic"
        r["mfu"] = r["flops_used"] / s / peaks["flops"]


def environment(args, device, torch_dev) -> dict:
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return ""

    cpu = results.cpu_model()
    return dict(
        commit=git("rev-parse", "HEAD") or "unknown", dirty=bool(git("status", "--porcelain")),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join([os.path.basename(sys.executable), *sys.argv]),
        device_kind=device.device_kind, platform=device.platform, torch_device=str(torch_dev),
        torch_device_name=torch.cuda.get_device_name(torch_dev) if torch_dev.type == "cuda" else cpu,
        cpu=cpu, cpu_count=os.cpu_count(), jax=jax.__version__, flax=flax.__version__, optax=optax.__version__,
        torch=torch.__version__, transformers=transformers.__version__, budget_s=args.budget,
    )


def shape_text(r: dict) -> str:
    return f"{r['batch']} x ({r['seq']}+{r['new']})" if r["task"] == "decode" else f"{r['batch']} x {r['seq']}"


def util_text(r: dict | None) -> str:
    if r is None or r["status"] != "ok":
        return "-"
    if "hbm_fraction" in r:
        return f"HBM {r['hbm_fraction']:.0%}"
    return f"MFU {r['mfu']:.1%}" if r.get("mfu") else "-"


def markdown(sizes: list[dict]) -> str:
    lines = ["| size | task | shape | jaxcot tok/s | torch tok/s | jaxcot / torch | jaxcot | torch | "
             "compile s | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in sizes:
        keys = list(dict.fromkeys((r["task"], r["batch"], r["seq"]) for r in s["rows"]))
        for key in keys:
            j, t = (next((r for r in s["rows"] if (r["task"], r["batch"], r["seq"]) == key and r["framework"] == fw),
                         None) for fw in ("jaxcot", "torch"))
            first = j or t
            jt, tt, compile_s = (j or {}).get("tokens_per_s"), (t or {}).get("tokens_per_s"), (j or {}).get("compile_s")
            status = "; ".join(f"{r['framework']} {r['status']}" for r in (j, t) if r and r["status"] != "ok")
            lines.append(
                f"| {s['size']} | {first['task']} | {shape_text(first)} | {f'{jt:,.0f}' if jt else '-'} | "
                f"{f'{tt:,.0f}' if tt else '-'} | {f'{jt / tt:.2f}x' if jt and tt else '-'} | {util_text(j)} | "
                f"{util_text(t)} | {f'{compile_s:.1f}' if compile_s else '-'} | {status or 'ok'} |")
    return "\n".join(lines)


def notes(sizes: list[dict]) -> list[str]:
    """FLOP cross-checks and what did not run, a line each."""
    out = []
    for s in sizes:
        for r in s["rows"]:
            if r["framework"] == "jaxcot" and r.get("flops") and r.get("flops_analytic"):
                out.append(f"{s['size']} {r['task']}: XLA {r['flops']:.3e} FLOPs per call, analytic "
                           f"{r['flops_analytic']:.3e} ({r['flops'] / r['flops_analytic']:.3f}x)")
            if r["status"] != "ok":
                out.append(f"{s['size']} {r['framework']} {r['task']} {shape_text(r)}: {r['status']} "
                           f"({r.get('note', '')})")
    return out


def write_report(env: dict, peaks: dict, args, sizes: list[dict], cut: str | None = None,
                 locked: bool = False) -> None:
    """Metrics, the Markdown table and notes, and the JSON (`--out`) of the rows so far; `cut`: the
    stage the watchdog stopped in."""
    if not locked and not REPORT_LOCK.acquire(blocking=False):
        return  # the watchdog is writing it
    sizes = copy.deepcopy(sizes)
    for s in sizes:
        add_metrics(s["rows"], model_config(s["size"])[0], peaks, args)
    print(markdown(sizes))
    for line in notes(sizes):
        print(f"- {line}")
    if cut:
        print(f"- hard stop in {cut}: {GRACE_S:.0f} s past the budget; it and what follows did not run")
    result = dict(env, peaks=peaks, args=vars(args), sizes=sizes, cut=cut,
                  rows=[dict(size=s["size"], **r) for s in sizes for r in s["rows"]],
                  elapsed_s=args.budget - budget_left(args))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"wrote {args.out}", flush=True)
    lines = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in markdown(sizes).splitlines()]
    results.write("accelerator-tiny" if args.tiny else "accelerator", result,
                  {"accelerator": dict(results.table(lines[0], lines[2:]),
                                       notes=[f"{line}." for line in notes(sizes)])},
                  args=args)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU (before jax starts)
    device = jax.devices("cpu")[0] if args.cpu else jax.devices()[0]
    torch_dev = torch.device("cuda:0" if device.platform == "gpu" and torch.cuda.is_available() else "cpu")
    skip_torch = args.skip_torch or (device.platform != "cpu" and torch_dev.type == "cpu")
    env = environment(args, device, torch_dev)
    peaks = device_peaks(device)
    print(f"{env['device_kind']} ({device.platform}), torch on {env['torch_device_name']}; jax {env['jax']}, "
          f"torch {env['torch']}, transformers {env['transformers']}; commit {env['commit'][:10]}")
    print(f"peaks ({peaks['source']}): {peaks['bandwidth'] / 1e9:,.0f} GB/s, {peaks['flops'] / 1e12:,.1f} TFLOP/s "
          f"bf16; budget {args.budget:.0f} s", flush=True)
    if skip_torch and not args.skip_torch:
        print("torch has no CUDA device here: jaxcot alone")
    sizes: list[dict] = []
    report = functools.partial(write_report, env, peaks, args, sizes)
    start_watchdog(args, report)
    for size in args.sizes:
        cfg, source = model_config(size)
        entry = dict(size=size, arch_source=source, params=cfg.num_params(), rows=[])
        sizes.append(entry)
        if not skip_torch:  # first: its allocator gives back what it took, jax's keeps it
            torch_rows(cfg, torch_dev, args, entry["rows"], size)
        jax_rows(cfg, device, args, entry["rows"], size)
        print(f"{size}: {cfg.num_params() / 1e6:,.1f}M parameters ({source}); "
              f"{budget_left(args):.0f} s of the budget left", flush=True)
    report()


if __name__ == "__main__":
    from jaxcot.runtime import tune_host_allocator

    # Both sides run in this process, so both get the same malloc settings (JAXCOT_HOST_MALLOC=default: glibc's).
    print(f"host malloc: {'tuned' if tune_host_allocator() else 'default'} (jaxcot/runtime.py)")
    main()
