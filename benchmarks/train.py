"""Training throughput: jaxcot's jitted SFT step vs an equivalent transformers + PyTorch loop.

Same llama-family model on both sides (random init in jaxcot, exported with `save_hf`, loaded by
transformers' LlamaForCausalLM), same batch [batch, seq] of random tokens (all valid, loss on the
second half as the "completion"), float32, full fine-tuning with AdamW (no weight decay; torch's
fused kernel) and global-norm clipping at 1.0; both sides read the loss back every step (as
`jaxcot train` does). jaxcot runs `jaxcot.train.step.make_train_step`, the step `jaxcot train`
uses, on a one-device mesh. Compile time is reported apart; timed windows of `--steps` steps follow warm-up steps,
interleaved between the two sides; the median window is shown.

Model FLOPs utilisation: 6 * N * tokens/s over the peak of this CPU measured with a large float32
matmul (the better of jax and torch), N = the parameters that take part in matmuls (all but the
input embedding table, which is a gather). The same MFU on a TPU means the same efficiency.

    python benchmarks/train.py                    # ~2M and ~20M models, batch 8, seq 256
    python benchmarks/train.py --threads 1 --models 2m

The machine may be shared: compare the ratio column (both sides measured in the same run), not
absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
import results  # noqa: E402  (benchmarks/results.py)

MODELS = {
    # ~2.0M parameters
    "2m": dict(vocab_size=2048, hidden_size=128, intermediate_size=512, num_layers=6, num_heads=4,
               num_kv_heads=2, head_dim=32),
    # ~19M parameters
    "20m": dict(vocab_size=8192, hidden_size=384, intermediate_size=1536, num_layers=6, num_heads=6,
                num_kv_heads=2, head_dim=64),
}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["2m", "20m"], choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds idle before each timed window")
    ap.add_argument("--threads", type=int, default=0,
                    help="pin both frameworks to this many cores (sched_setaffinity + torch threads); 0 = all")
    return ap.parse_args()


def matmul_peak(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """(jax FLOP/s, torch FLOP/s) of an n x n float32 matmul, best of `repeats`."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ja = jnp.asarray(a)
    mm = jax.jit(lambda x: x @ x)
    mm(ja).block_until_ready()
    ta = torch.from_numpy(a)
    torch.mm(ta, ta)
    best_j = best_t = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(ja).block_until_ready()
        best_j = min(best_j, time.perf_counter() - t)
        t = time.perf_counter()
        torch.mm(ta, ta)
        best_t = min(best_t, time.perf_counter() - t)
    flops = 2.0 * n**3
    return flops / best_j, flops / best_t


def build_jax(cfg, batch, seq, rng):
    """(step closure returning the loss, compile seconds, model, host batch)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcot.models import init_model
    from jaxcot.sharding import make_mesh
    from jaxcot.train.config import OptimConfig
    from jaxcot.train.step import make_optimizer, make_train_step, split_model, step_shardings

    model = init_model(cfg, 0)
    tokens = rng.integers(0, cfg.vocab_size, (1, batch, seq)).astype(np.int32)
    loss_mask = np.zeros((1, batch, seq), bool)
    loss_mask[:, :, seq // 2:] = True
    host = dict(
        tokens=tokens, mask=np.ones_like(loss_mask),
        positions=np.broadcast_to(np.arange(seq, dtype=np.int32), tokens.shape).copy(),
        segments=np.ones(tokens.shape, np.int32), loss_mask=loss_mask,
    )
    graphdef, params, frozen = split_model(model, "full")
    optim = OptimConfig(lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0, clip_norm=1.0)
    tx, schedule = make_optimizer(optim, 1000)
    mesh = make_mesh(devices=jax.devices()[:1])
    sh = step_shardings(mesh, params, frozen, jax.eval_shape(tx.init, params))
    params = jax.device_put(params, sh.params)
    frozen = jax.device_put(frozen, sh.frozen)
    opt_state = jax.jit(tx.init, out_shardings=sh.opt_state)(params)
    batch_arrays = {k: jax.device_put(v, sh.batch) for k, v in host.items()}
    step_fn = make_train_step(graphdef, tx, schedule, sh, packed=False)
    step0 = jnp.asarray(0, jnp.int32)
    t = time.perf_counter()
    compiled = step_fn.lower(params, opt_state, frozen, batch_arrays, step0).compile()
    compile_s = time.perf_counter() - t
    state = {"params": params, "opt": opt_state}

    def step():
        state["params"], state["opt"], m = compiled(state["params"], state["opt"], frozen, batch_arrays, step0)
        return float(m["loss"])

    return step, compile_s, model, host


def build_torch(model, host, folder):
    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    from jaxcot.models import save_hf

    save_hf(model, folder)
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).train()
    ids = torch.from_numpy(host["tokens"][0].astype("int64"))
    w = torch.from_numpy(host["loss_mask"][0][:, 1:].astype("float32")).reshape(-1)
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)

    def step():
        logits = hf(input_ids=ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        loss = (nll * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        return float(loss.item())

    return step


def main() -> None:
    args = parse_args()
    if args.threads:  # before jax/torch start their thread pools
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])

    import jax
    import numpy as np
    import torch

    from jaxcot.models import ModelConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    peak_j, peak_t = matmul_peak()
    peak = max(peak_j, peak_t)
    cores = len(os.sched_getaffinity(0))
    print(f"batch {args.batch} x seq {args.seq}, float32, AdamW; median of {args.windows} windows of "
          f"{args.steps} steps; "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), {cores} cores")
    print(f"matmul peak (2048^3 float32): jax {peak_j / 1e9:.1f} GFLOP/s, torch {peak_t / 1e9:.1f} GFLOP/s; "
          f"MFU below is over {peak / 1e9:.1f} GFLOP/s")
    header = (f"{'model':>5} {'params':>7} {'jaxcot tok/s':>12} {'torch tok/s':>11} {'ratio':>6} "
              f"{'jaxcot MFU':>10} {'torch MFU':>9} {'compile s':>9} {'|dloss| step1':>13}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.models:
        cfg = ModelConfig(family="llama", max_position_embeddings=max(512, args.seq), tie_word_embeddings=False,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0, **MODELS[name])
        rng = np.random.default_rng(0)
        jax_step, compile_s, model, host = build_jax(cfg, args.batch, args.seq, rng)
        with tempfile.TemporaryDirectory() as tmp:
            torch_step = build_torch(model, host, os.path.join(tmp, "hf"))
        dloss = abs(jax_step() - torch_step())  # same weights, same batch: the first losses agree
        for _ in range(args.warmup - 1):
            jax_step(), torch_step()
        times = {"jax": [], "torch": []}
        for _ in range(args.windows):
            for key, fn in (("jax", jax_step), ("torch", torch_step)):
                time.sleep(args.pause)
                t = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                times[key].append((time.perf_counter() - t) / args.steps)
        jt, tt = statistics.median(times["jax"]), statistics.median(times["torch"])
        tokens = args.batch * args.seq
        n_total = cfg.num_params()
        n_matmul = n_total - cfg.vocab_size * cfg.hidden_size
        mfu_j = 6 * n_matmul * tokens / jt / peak
        mfu_t = 6 * n_matmul * tokens / tt / peak
        print(f"{name:>5} {n_total / 1e6:6.1f}M {tokens / jt:12.0f} {tokens / tt:11.0f} {tt / jt:6.2f} "
              f"{mfu_j:10.1%} {mfu_t:9.1%} {compile_s:9.1f} {dloss:13.2e}")
        rows.append(dict(model=name, params=n_total, jaxcot_step_s=times["jax"], torch_step_s=times["torch"],
                         jaxcot_tok_s=tokens / jt, torch_tok_s=tokens / tt, ratio=tt / jt, jaxcot_mfu=mfu_j,
                         torch_mfu=mfu_t, compile_s=compile_s, dloss_step1=dloss))
    print("ratio = jaxcot tokens/s / torch tokens/s (above 1: jaxcot faster)")
    peaks = {"jax": peak_j, "torch": peak_t}
    results.write("train", {"matmul_peak_flops": peaks, "rows": rows}, {"train": results.table(
        ["model", "params", "jaxcot tok/s", "torch tok/s", "ratio", "jaxcot MFU", "torch MFU", "compile s"],
        [[r["model"], f"{r['params'] / 1e6:.1f}M", f"{r['jaxcot_tok_s']:.0f}", f"{r['torch_tok_s']:.0f}",
          f"{r['ratio']:.2f}x", f"{r['jaxcot_mfu']:.1%}", f"{r['torch_mfu']:.1%}", f"{r['compile_s']:.1f}"]
         for r in rows])}, args=args)


if __name__ == "__main__":
    from jaxcot.runtime import tune_host_allocator

    # Both sides run in this process, so both get the same malloc settings (JAXCOT_HOST_MALLOC=default: glibc's).
    print(f"host malloc: {'tuned' if tune_host_allocator() else 'default'} (jaxcot/runtime.py)")
    main()
