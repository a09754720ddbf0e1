"""Generation throughput: jaxcot's compiled sampler vs transformers' PyTorch `generate`.

Same weights and prompts on both sides; greedy; exactly `--new` new tokens per row (EOS ignored on
both sides); batch 1 and 8. Compile time is reported apart from the timed runs; the two sides'
timed runs take turns (medians), so drift on a shared host hits both alike. The batch-1 bound
is weight bytes per token / memory bandwidth (numpy copies on every core at once, counted as read
+ write). `same` counts the rows whose greedy tokens are identical on both sides up to the end of
the answer (jaxcot's first EOS: transformers, held to `--new` tokens by `min_new_tokens`, may not
write EOS, so the two sides part there by design); with `--dtype bfloat16`, `=f32` counts the
rows whose bfloat16 (or int8) tokens equal jaxcot's float32 ones; each with the mean length of
the common prefix in brackets. `--dtype int8`: int8 weight-only projections with float32
activations on both sides, from the same float32 weights: jaxcot's `Generator(quantize='int8')`
(one scale per output channel) against torchao's `Int8WeightOnlyConfig` on the transformers
model (`pip install torchao`; without it jaxcot runs alone).

    python benchmarks/generate.py                      # SmolLM2-135M (GGUF) + a tiny random model
    python benchmarks/generate.py --models tiny --dtype bfloat16
    python benchmarks/generate.py --models smollm2 --dtype int8
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import results  # benchmarks/results.py
import torch

from jaxcot.generate import Generator, SamplingConfig
from jaxcot.models import ModelConfig, build_model, load_model, load_tokenizer, smollm2_gguf_path
from jaxcot.models.decoder import quantize_int8
from jaxcot.models.params import param_bytes

QUESTIONS = [
    "What is the capital of France?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a short poem about the sea.",
    "Explain photosynthesis in one sentence.",
    "What is 17 times 23?",
    "Name three prime numbers greater than 50 and explain how you know they are prime.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
]


def memory_bandwidth(nbytes: int = 1 << 29, repeats: int = 5) -> float:
    """Bytes/s of numpy copies (read + write) on every core at once (one thread per core, each
    copying its own slice; numpy drops the GIL while it copies), best of `repeats`."""
    from concurrent.futures import ThreadPoolExecutor

    cores = len(os.sched_getaffinity(0))
    src = np.ones(nbytes // 8, np.float64)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(src.size), cores)
    slices = [slice(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]
    best = float("inf")
    with ThreadPoolExecutor(len(slices)) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), slices))
            best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def tiny_models(dtype):
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    hf = tf.LlamaForCausalLM(cfg).float().eval()
    sd = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    def build(dt):
        return build_model(ModelConfig.from_hf_config(hf.config), lambda n: sd[n], sd.keys(), source="tiny",
                           dtype=dt, param_dtype=dt)

    ours = build(dtype)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 4096, n).tolist() for n in (12, 30, 21, 7, 40, 16, 25, 33)]
    return hf, ours, (ours if dtype == jnp.float32 else build(jnp.float32)), prompts, 0


def torch_twin(ours):
    """transformers' PyTorch model with exactly our (float32) weights, via the HF export mapping."""
    import transformers as tf

    from jaxcot.models import hf_state_dict

    cfg = tf.AutoConfig.for_model(**ours.config.to_hf_dict())
    hf = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    sd = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in hf_state_dict(ours).items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf


def smollm2_models(dtype):
    path = smollm2_gguf_path()
    ours = load_model(path, dtype=dtype, param_dtype=dtype)
    ours_f32 = ours if dtype == jnp.float32 else load_model(path)
    hf = torch_twin(ours_f32)
    tok = load_tokenizer(path)
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                                  tokenize=False), add_special_tokens=False) for q in QUESTIONS]
    return hf, ours, ours_f32, prompts, int(tok.pad_token_id)


def jaxcot_runner(model, prompts, new, quantize=None):
    """(run, generator, tokens): one greedy generation of `new` tokens per prompt, after compiling;
    tokens: the new token ids of each row."""
    gen = Generator(model, None, eos_ids=(), quantize=quantize)
    run = lambda: gen.generate_ids(prompts, max_new_tokens=new, sampling=SamplingConfig())  # noqa: E731
    out = run()
    assert all(len(c.token_ids) == new for c in out)
    return run, gen, [c.token_ids for c in out]


def torch_runner(hf, prompts, new, pad_id):
    """(run, tokens): one `hf.generate` of exactly `new` greedy tokens per left-padded prompt, after
    a warm-up; tokens: the new token ids of each row."""
    b, t = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding, as transformers recommends for generation
        ids[i, t - len(p):] = torch.tensor(p)
        mask[i, t - len(p):] = 1
    kw = dict(attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=pad_id)

    def run():
        with torch.inference_mode():
            out = hf.generate(ids, **kw)
        assert out.shape[1] == t + new
        return out

    return run, run()[:, t:].tolist()


def timed_turns(runs: dict, repeats: int) -> dict:
    """Median seconds of each run, the runs taking turns so that drift on a shared host hits all alike."""
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def agreement(ours, theirs, eos_ids=()) -> str:
    """'k/n (p)': k of n rows with the same tokens up to the end of the answer (the first of
    `eos_ids` in our row: transformers' `min_new_tokens` forbids EOS before the last token, so
    after it the two sides write different things by design), p the mean length of the common
    prefix within that span."""
    ours, theirs = [list(a) for a in ours], [list(b) for b in theirs]
    ends = [next((i for i, x in enumerate(a) if x in eos_ids), len(a)) for a in ours]
    ours, theirs = [a[:e] for a, e in zip(ours, ends)], [b[:e] for b, e in zip(theirs, ends)]
    prefix = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
              for a, b in zip(ours, theirs)]
    return f"{sum(a == b for a, b in zip(ours, theirs))}/{len(prefix)} ({sum(prefix) / len(prefix):.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2", "tiny"], choices=["smollm2", "tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side, taking turns")
    ap.add_argument("--skip-torch", action="store_true", help="time jaxcot only")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8"],
                    help="weights and compute, jaxcot and torch alike (int8: weight-only, float32 compute)")
    args = ap.parse_args()
    int8 = args.dtype == "int8"
    dtype = jnp.float32 if int8 else jnp.dtype(args.dtype)
    if int8 and not args.skip_torch and importlib.util.find_spec("torchao") is None:
        print("torchao is not installed (pip install torchao): timing jaxcot's int8 alone")
        args.skip_torch = True
    bw = memory_bandwidth()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs; memory bandwidth {bw / 1e9:.1f} GB/s")
    header = (f"{'model':8} {'batch':>5} {'jaxcot tok/s':>12} {'torch tok/s':>11} {'ratio':>6} "
              f"{'compile s':>9} {'bound tok/s':>11} {'of bound':>8} {'same':>9} {'=f32':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.models:
        hf, ours, ours_f32, prompts, pad_id = (smollm2_models if name == "smollm2" else tiny_models)(dtype)
        if dtype == jnp.bfloat16:
            hf = hf.to(torch.bfloat16)  # both sides in the same dtype, from the same float32 weights
        if int8 and not args.skip_torch:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            quantize_(hf, Int8WeightOnlyConfig())  # every nn.Linear: the projections and an untied LM head
        eos_ids = set(ours.config.eos_ids)
        wb = param_bytes(quantize_int8(ours) if int8 else ours)
        bound = bw / wb  # tokens/s at batch 1 if every weight byte is read once per token
        for b in args.batches:
            batch = (prompts * (b // len(prompts) + 1))[:b]
            runs = {}
            runs["jaxcot"], gen, our_tokens = jaxcot_runner(ours, batch, args.new, "int8" if int8 else None)
            same = f32 = ""
            if not args.skip_torch:
                runs["torch"], their_tokens = torch_runner(hf, batch, args.new, pad_id)
                same = agreement(our_tokens, their_tokens, eos_ids)
            if int8 or dtype != jnp.float32:
                f32_tokens = jaxcot_runner(ours_f32, batch, args.new)[2]
                f32 = agreement(our_tokens, f32_tokens, eos_ids)
            med = timed_turns(runs, args.repeats)
            jt, tt, compile_s = med["jaxcot"], med.get("torch", float("nan")), gen.compile_seconds
            j_tps, t_tps = b * args.new / jt, b * args.new / tt
            of_bound = f"{j_tps / bound:8.2f}" if b == 1 else f"{'':8}"
            print(f"{name:8} {b:5d} {j_tps:12.1f} {t_tps:11.1f} {j_tps / t_tps:6.2f} {compile_s:9.1f} "
                  f"{bound:11.1f} {of_bound} {same:>9} {f32:>9}")
            rows.append(dict(model=name, dtype=args.dtype, batch=b, new=args.new, jaxcot_tok_s=j_tps,
                             torch_tok_s=None if args.skip_torch else t_tps, compile_s=compile_s, bound_tok_s=bound,
                             same=same, same_as_float32=f32, weight_bytes=wb))
        print(f"  {name}: {wb / 1e6:.1f} MB of weights ({args.dtype}); batch-1 bound {1e3 / bound:.1f} ms/token")
    fmt = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    results.write("generate" if args.dtype == "float32" else f"generate-{args.dtype}",
                  {"memory_bandwidth": bw, "rows": rows}, {"generate": results.table(
                      ["model", "dtype", "batch", "jaxcot tok/s", "transformers tok/s", "ratio", "compile s",
                       "rows equal to transformers'", "rows equal to jaxcot float32"],
                      [[r["model"], r["dtype"], r["batch"], fmt(r["jaxcot_tok_s"]), fmt(r["torch_tok_s"]),
                        f"{r['jaxcot_tok_s'] / r['torch_tok_s']:.2f}x" if r["torch_tok_s"] else "-",
                        f"{r['compile_s']:.1f}", r["same"] or "-", r["same_as_float32"] or "-"] for r in rows])},
                  args=args)


if __name__ == "__main__":
    from jaxcot.runtime import tune_host_allocator

    # Both sides run in this process, so both get the same malloc settings (JAXCOT_HOST_MALLOC=default: glibc's).
    print(f"host malloc: {'tuned' if tune_host_allocator() else 'default'} (jaxcot/runtime.py)")
    main()
