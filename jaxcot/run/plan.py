"""`jaxcot plan`: the paper's scale, planned by compiling for the real target.

The model's real architecture is built with abstract weights (shapes only), and the three
programs the method runs at scale are lowered and compiled for a TPU topology on this host
(libtpu's compile-only path: `jax.experimental.topologies.get_topology_desc`, as MaxText's
`train_compile.py` does): the LoRA train step, the GoGI pass and the decode loop (or, when the
run decodes with continuous batching, the decode engine's one program). XLA then says
what each needs per device (`memory_analysis`: arguments, outputs, temporaries) and what it
costs (`cost_analysis`: FLOPs per device), and the plan turns those into hours for the paper's
workloads at a stated MFU (compute-bound programs) or HBM bandwidth (decoding). Nothing runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcot import tpu_slices
from jaxcot.config import check, check_counts, check_range

GiB = 2**30
# Per chip, from the public Cloud TPU spec sheets: HBM (GiB), peak bf16 TFLOP/s, HBM GB/s.
CHIPS = {
    "v4": (32, 275.0, 1228.0),
    "v5e": (16, 197.0, 819.0),
    "v5p": (95, 459.0, 2765.0),
    "v6e": (32, 918.0, 1640.0),
}


@dataclasses.dataclass
class PlanConfig:
    """What to compile and the workloads to time. Shapes are global (over all devices). The
    compute-bound programs are timed at `mfu` of peak FLOP/s; decoding by the HBM bytes it reads
    per token (weights + the KV cache) at `hbm_eff` of the bandwidth."""

    topology: str = "v5e:2x4"
    # None (here and below): from the run config (`jaxcot plan` fills them, `resolve` the rest)
    mesh: tuple[int, int, int] | None = None  # the train step's (data, fsdp, tensor); data -1: the remaining devices
    score_mesh: tuple[int, int, int] | None = None  # the GoGI pass's (the score stage's ScoreConfig.mesh)
    infer_mesh: tuple[int, int, int] | None = None  # generation's
    lora_rank: int = 8  # the student's adapters (alpha 2 x rank)
    remat: bool | None = None  # the train step recomputes each block in its backward (TrainConfig.remat)
    score_remat: bool | None = None  # so does the GoGI pass (ScoreConfig.remat; lets its weights shard over fsdp)
    # dtypes: generation's weights, compute and KV cache; GoGI's weights and compute; the student's
    # base weights and adapters (param_dtype) and its matmuls (compute_dtype)
    generate_dtype: str | None = None
    score_dtype: str | None = None
    param_dtype: str | None = None
    compute_dtype: str | None = None
    # one SFT step: train_rows packed rows of train_len tokens
    train_rows: int | None = None
    train_len: int | None = None
    # one GoGI batch, the gradient taken at score_layer (None: round(2/3 L)), max_answer answer tokens
    score_rows: int | None = None
    score_len: int | None = None
    score_layer: int | None = None
    max_answer: int = 64
    # one generation batch
    decode_rows: int = 64
    prompt_len: int = 256
    new_tokens: int = 2048
    # the paper's workloads: `traces` chains of trace_tokens scored and fine-tuned on for `epochs`,
    # eval_questions test questions decoded
    traces: int = 7472
    trace_tokens: int = 1024
    epochs: int = 3
    eval_questions: int = 500
    mfu: float = 0.4
    hbm_eff: float = 0.7
    # generation in the continuous-batching engine (`jaxcot.generate.engine`; a run's
    # generate.engine.continuous): engine_slots rows at once (None or 0: the static loop, a batch
    # of decode_rows at a time), the prompts in queues of engine_queue (0: one queue of `traces`),
    # KV eviction at engine_budget chain tokens a row (0: off; its window and scorer). Early exit
    # is not planned (its trial adds the answer marker and answer tokens to each row's cache).
    engine_slots: int | None = None
    engine_queue: int = 256
    engine_budget: int = 0
    engine_window: int = 16
    engine_scorer: str = "attention"

    def __post_init__(self):
        check(self.chip in CHIPS, "topology", f"{self.topology!r}: a chip of {sorted(CHIPS)} then ':' and a shape, "
                                              "e.g. v5e:2x4 or v4:2x2x2")
        check_counts(self, "lora_rank", "max_answer", "decode_rows", "prompt_len", "new_tokens", "traces",
                     "trace_tokens", "epochs", "eval_questions")
        for k in ("train_rows", "train_len", "score_rows", "score_len"):
            check_range(self, k, 1, optional=True)
        check_range(self, "score_layer", 0, optional=True)
        check_range(self, "mfu", 0, 1, lo_open=True)
        check_range(self, "hbm_eff", 0, 1, lo_open=True)
        check_range(self, "engine_slots", 0, optional=True)
        for k in ("engine_queue", "engine_budget", "engine_window"):
            check_range(self, k, 0)
        check(not self.engine_budget or self.engine_window < self.engine_budget, "engine_window",
              "must be below the eviction budget (engine_budget)")
        for k in DTYPE_FIELDS:
            v = getattr(self, k)
            check(v in (None, "float32", "bfloat16"), k, f"float32 or bfloat16, got {v!r}")

    @property
    def chip(self) -> str:
        return self.topology.split(":")[0].lower()


DTYPE_FIELDS = ("generate_dtype", "score_dtype", "param_dtype", "compute_dtype")
# What a PlanConfig field left None (and not filled from a run config) becomes.
FALLBACK = {"mesh": (-1, 1, 1), "score_mesh": (-1, 1, 1), "infer_mesh": (-1, 1, 1), "remat": False,
            "score_remat": False, "generate_dtype": "bfloat16",
            "score_dtype": "bfloat16", "param_dtype": "bfloat16", "compute_dtype": "bfloat16", "train_rows": 16,
            "train_len": 2048, "score_rows": 8, "score_len": 2048}


def resolve(cfg: PlanConfig, sources: dict[str, str] | None = None) -> tuple[PlanConfig, dict[str, str]]:
    """cfg with its None fields set from FALLBACK, and where each setting came from."""
    sources = dict(sources or {})
    filled = {k: v for k, v in FALLBACK.items() if getattr(cfg, k) is None}
    sources.update({k: "plan default" for k in filled})
    return dataclasses.replace(cfg, **filled), sources


@dataclasses.dataclass
class ProgramPlan:
    """One compiled program: bytes per device (arguments, outputs, temporaries, code; aliased
    donated buffers counted once), FLOPs per device per call, and the call's time estimate."""

    name: str
    shapes: str
    rows: int  # global rows (sequences) per call
    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    code_bytes: int
    flops: float
    seconds: float
    compile_s: float
    error: str | None = None  # XLA's refusal (out of HBM): then only temp_bytes, what it asked for, is known
    bytes_accessed: float = float("nan")  # HBM bytes per device per call (cost_analysis)
    roofline_s: float = float("nan")  # max(FLOPs at peak, bytes at full HBM bandwidth): the floor of a call
    kind: str = ""  # which of PROGRAMS it belongs to (compile_programs sets it)

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes


@dataclasses.dataclass
class Plan:
    model: str
    params: int
    topology: str
    devices: int
    chips: int
    mesh: dict
    hbm_bytes: int
    programs: list[ProgramPlan]
    hours: dict[str, float]
    notes: list[str]
    largest: list[tuple[str, tuple, str]]
    settings: list[str] = dataclasses.field(default_factory=list)  # 'name value (source)', for the header


def topology_devices(topology: str) -> list:
    """The devices of a TPU topology, for compiling only (no TPU needed, libtpu is)."""
    import os

    from jax.experimental import topologies

    # Compiling only: several such processes may share the host (libtpu otherwise takes a lock
    # file for the chips it would drive).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        return list(topologies.get_topology_desc(topology, platform="tpu").devices)
    except Exception as e:  # noqa: BLE001 - libtpu missing or the name unknown: say which
        raise RuntimeError(
            f"cannot compile for TPU topology {topology!r} ({type(e).__name__}: {e}). Compiling for a TPU on "
            "this host needs libtpu, which `jaxcot plan` installs in a folder of its own (jaxcot.run.libtpu)"
        ) from e


def topology_chips(topology: str) -> int:
    """The chips of a slice name: 'v5e:2x4' -> 8."""
    shape = topology.split(":", 1)[1] if ":" in topology else ""
    try:
        return math.prod(int(x) for x in shape.lower().split("x"))
    except ValueError:
        raise ValueError(f"{topology!r}: a chip then ':' and a shape such as 2x4 or 2x2x2") from None


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _too_big(name: str, shapes: str, rows: int, error: str, compile_s: float) -> ProgramPlan:
    """A program XLA refused for want of HBM: what it said it needs, nothing else known."""
    import re

    m = re.search(r"temporaries \(([\d.]+)([KMGT])\)", error)
    need = float(m[1]) * 1024 ** "KMGT".index(m[2]) * 1024 if m else float("nan")
    return ProgramPlan(name=name, shapes=shapes, rows=rows, argument_bytes=0, output_bytes=0,
                       temp_bytes=int(need) if m else 0, alias_bytes=0, code_bytes=0, flops=float("nan"),
                       seconds=float("nan"), compile_s=compile_s, error=error.splitlines()[0][:300])


def _program(name: str, shapes: str, rows: int, compiled, compile_s: float, seconds_of) -> ProgramPlan:
    """The plan of one compiled program (or of XLA's refusal); seconds_of(flops) times a call."""
    if isinstance(compiled, str):
        return _too_big(name, shapes, rows, compiled, compile_s)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0))
    moved = float((cost or {}).get("bytes accessed", float("nan")))
    return ProgramPlan(
        name=name, shapes=shapes, rows=rows, argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes), code_bytes=int(mem.generated_code_size_in_bytes),
        flops=flops, seconds=seconds_of(flops), compile_s=compile_s, bytes_accessed=moved,
    )


def _compile(lowered) -> tuple[Any, float]:
    """(the compiled program, or XLA's message when it does not fit the chip's HBM; seconds)."""
    import time

    t0 = time.perf_counter()
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        compiled = str(e)
    return compiled, time.perf_counter() - t0


def _train_program(model_cfg, cfg: PlanConfig, mesh, compute_s) -> ProgramPlan:
    """The LoRA train step: base and adapters in param_dtype, matmuls in compute_dtype, one packed batch."""
    from flax import nnx

    from jaxcot.models.decoder import Decoder
    from jaxcot.train.config import LINEAR_LAYERS, OptimConfig
    from jaxcot.train.lora import apply_lora
    from jaxcot.train.step import BATCH_KEYS, make_optimizer, make_train_step, split_model, step_shardings

    def lora_model():
        param_dtype = jnp.dtype(cfg.param_dtype)
        m = Decoder(model_cfg, rngs=nnx.Rngs(0), dtype=jnp.dtype(cfg.compute_dtype), param_dtype=param_dtype)
        apply_lora(m, rank=cfg.lora_rank, alpha=2.0 * cfg.lora_rank, targets=LINEAR_LAYERS, param_dtype=param_dtype)
        return m

    graphdef, params, frozen = split_model(nnx.eval_shape(lora_model), "lora")
    tx, schedule = make_optimizer(OptimConfig(), 1000)
    opt_state = jax.eval_shape(tx.init, params)
    sh = step_shardings(mesh, params, frozen, opt_state)
    step = make_train_step(graphdef, tx, schedule, sh, packed=True, remat=cfg.remat)
    batch = {k: jax.ShapeDtypeStruct((1, cfg.train_rows, cfg.train_len),
                                     bool if k in ("mask", "loss_mask") else jnp.int32, sharding=sh.batch)
             for k in BATCH_KEYS}
    lowered = step.lower(_abstract(params, sh.params), _abstract(opt_state, sh.opt_state),
                         _abstract(frozen, sh.frozen), batch, jax.ShapeDtypeStruct((), jnp.int32, sharding=sh.scalar))
    compiled, dt = _compile(lowered)
    name = "LoRA train step" + (" (remat)" if cfg.remat else "")
    return _program(name, f"{cfg.train_rows} x {cfg.train_len}", cfg.train_rows, compiled, dt, compute_s)


def _gogi_program(g_graphdef, state_abs, layer: int, cfg: PlanConfig, mesh, compute_s) -> ProgramPlan:
    """The GoGI pass (weights and compute in score_dtype): the answer loss's gradient at one layer, entropy."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from jaxcot.importance.gogi import scores_program
    from jaxcot.sharding import BATCH

    rows = NamedSharding(mesh, P(BATCH, None))
    arr = lambda dtype: jax.ShapeDtypeStruct((cfg.score_rows, cfg.score_len), dtype, sharding=rows)  # noqa: E731
    lowered = scores_program().lower(g_graphdef, state_abs, arr(jnp.int32), arr(bool), arr(bool), arr(bool),
                                     layers=(layer,), norm="l1", max_answer=cfg.max_answer, per_layer=False, split=0,
                                     remat=cfg.score_remat)
    compiled, dt = _compile(lowered)
    return _program(f"GoGI pass (layer {layer})", f"{cfg.score_rows} x {cfg.score_len}", cfg.score_rows, compiled,
                    dt, compute_s)


def _decode_spec(model_cfg, cfg: PlanConfig):
    """The DecodeSpec generation is compiled with: new_tokens, sampling at temperature 0.6 / top-p 0.95."""
    from jaxcot.generate.sampler import DecodeSpec
    from jaxcot.generate.sampling import SamplingConfig
    from jaxcot.generate.stop import StopPatterns

    return DecodeSpec(max_new_tokens=cfg.new_tokens, sampling=SamplingConfig(temperature=0.6, top_p=0.95),
                      eos_ids=(int(model_cfg.eos_token_id or 0),), stop=StopPatterns(), pad_id=0)


def _decode_bytes(model_cfg, state_abs, mesh, kv_dtype) -> tuple[int, float]:
    """(the weights' bytes per device, the KV cache's bytes per device per cached token of a row)."""
    per_dev_weights = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                          for x in jax.tree.leaves(state_abs))
    tensor = mesh.shape["tensor"]
    heads_per_dev = model_cfg.num_kv_heads / (tensor if model_cfg.num_kv_heads % tensor == 0 else 1)
    kv_per_token = 2 * model_cfg.num_layers * heads_per_dev * model_cfg.head_dim * kv_dtype.itemsize  # k and v
    return per_dev_weights, kv_per_token


def _generation_programs(model_cfg, g_graphdef, state_abs, cfg: PlanConfig, mesh, compute_s, hbm_gbs: float
                         ) -> list[ProgramPlan]:
    """Prefill and the decode loop (weights, compute and KV cache in generate_dtype). The loop's FLOPs say little (a
    while loop): it is timed by the bytes each step reads, the weights and the mean cache."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from jaxcot.generate.sampler import make_programs
    from jaxcot.sharding import BATCH, batch_shards

    spec = _decode_spec(model_cfg, cfg)
    kv_dtype = jnp.dtype(cfg.generate_dtype)
    prefill, decode = make_programs(g_graphdef, spec, mesh, kv_dtype)
    b, t = cfg.decode_rows, cfg.prompt_len
    rows, rows1 = NamedSharding(mesh, P(BATCH, None)), NamedSharding(mesh, P(BATCH))
    args = (jax.ShapeDtypeStruct((b, t), jnp.int32, sharding=rows), jax.ShapeDtypeStruct((b, t), bool, sharding=rows),
            jax.ShapeDtypeStruct((), jnp.uint32, sharding=NamedSharding(mesh, P())),
            jax.ShapeDtypeStruct((b,), jnp.uint32, sharding=rows1), jax.ShapeDtypeStruct((b,), bool, sharding=rows1))
    pre_compiled, dt_pre = _compile(prefill.lower(state_abs, *args))
    if isinstance(pre_compiled, str):  # the decode loop's state is the prefill's output: unknown layout
        dec_compiled, dt = "prefill does not fit: decode loop not compiled", 0.0
    else:
        state0 = _abstract(jax.eval_shape(prefill, state_abs, *args), pre_compiled.output_shardings)
        dec_compiled, dt = _compile(decode.lower(state_abs, state0))
    n_batch = batch_shards(mesh)
    per_dev_weights, kv_per_token = _decode_bytes(model_cfg, state_abs, mesh, kv_dtype)
    cache_per_dev = kv_per_token * (t + cfg.new_tokens / 2) * b / n_batch  # the mean cache length over the loop

    def decode_s(flops):
        return cfg.new_tokens * (per_dev_weights + cache_per_dev) / (hbm_gbs * 1e9 * cfg.hbm_eff)

    return [_program("prefill", f"{b} x {t}", b, pre_compiled, dt_pre, compute_s),
            _program("decode loop", f"{b} rows x {cfg.new_tokens} steps", b, dec_compiled, dt, decode_s)]


def engine_queue(cfg: PlanConfig) -> int:
    """Prompts one engine call decodes: a queue of engine_queue (0: every trace in one queue)."""
    return cfg.engine_queue or cfg.traces


def engine_slots(cfg: PlanConfig, mesh) -> int:
    """R: as the generate stage runs it, never more slots than a queue's prompts, then a multiple
    of the batch shards (`engine_spec`)."""
    from jaxcot.importance.batching import batch_rows
    from jaxcot.sharding import batch_shards

    return batch_rows(min(cfg.engine_slots, engine_queue(cfg)), batch_shards(mesh))


def _engine_program(model_cfg, g_graphdef, state_abs, cfg: PlanConfig, mesh, compute_s, hbm_gbs: float
                    ) -> ProgramPlan:
    """The continuous-batching engine's one program (`make_engine`, compiled as `SlotEngine.run` does): R slots over
    a queue of Q prompts of T tokens (replicated), N new tokens each, the real `cache_tiers`, no early exit.

    Its FLOPs say little (while loops), so it is timed as the static loop is, by HBM bytes: each step reads the
    weights once and the R rows' caches (T + the last tier's chain slots a row: tiers never shrink within a run, and
    after the first wave every row is there), and a queue needs at least ceil(Q / R) * N steps (assumed: every chain
    runs to N tokens, the worst case). Plus Q one-prompt prefills, timed by compute: a prefill's FLOPs are not
    separable from the program's cost_analysis, so each is taken as 2 * params * T, over the devices one row is
    split on (not the batch axes), at the MFU."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from jaxcot.generate.engine import QUEUE_MIN, EngineSpec, EvictionSpec, cache_tiers, make_engine
    from jaxcot.generate.sampler import PROMPT_BUCKET_STEPS
    from jaxcot.shapes import bucket_length
    from jaxcot.sharding import batch_shards

    q, r, t, n = engine_queue(cfg), engine_slots(cfg, mesh), cfg.prompt_len, cfg.new_tokens
    eviction = EvictionSpec(cfg.engine_budget, cfg.engine_window, cfg.engine_scorer) if cfg.engine_budget else None
    spec = EngineSpec(decode=_decode_spec(model_cfg, cfg), slots=r, eviction=eviction)
    tiers = cache_tiers(spec)  # the Sampler's defaults: 4 phases (decode_phases), 128 slots of room at least
    kv_dtype = jnp.dtype(cfg.generate_dtype)
    q_pad = bucket_length(q, QUEUE_MIN, PROMPT_BUCKET_STEPS)  # SlotEngine.run's queue grid
    rep = NamedSharding(mesh, P())
    arg = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=rep)  # noqa: E731
    run = make_engine(g_graphdef, spec, mesh, kv_dtype, (t,), tiers)  # one prompt bucket: T
    compiled, dt = _compile(run.lower(state_abs, arg((q_pad, t), jnp.int32), arg((q_pad, t), bool),
                                      arg((q_pad,), jnp.int32), arg((q_pad,), jnp.uint32), arg((), jnp.uint32),
                                      arg((), jnp.int32)))
    n_batch = batch_shards(mesh)
    per_dev_weights, kv_per_token = _decode_bytes(model_cfg, state_abs, mesh, kv_dtype)
    cache_per_dev = kv_per_token * (t + tiers[-1]) * r / n_batch
    steps = math.ceil(q / r) * n
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(state_abs))
    prefill_flops = 2 * n_params * t / (mesh.devices.size / n_batch)  # per device, one prompt

    def engine_s(flops):
        return steps * (per_dev_weights + cache_per_dev) / (hbm_gbs * 1e9 * cfg.hbm_eff) + q * compute_s(prefill_flops)

    return _program("decode engine", f"{r} slots, queue {q_pad} x {t} + {n} tokens", r, compiled, dt, engine_s)


def _abstract_decoder(model_cfg, dtype: str, mesh):
    """(graphdef, abstract sharded state, the state's shapes) of the model in one dtype."""
    from flax import nnx

    from jaxcot.models.decoder import Decoder
    from jaxcot.sharding import tree_shardings

    dt = jnp.dtype(dtype)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0), dtype=dt, param_dtype=dt)))
    state = state.to_pure_dict()
    return graphdef, _abstract(state, tree_shardings(state, mesh)), state


PROGRAMS = ("train", "gogi", "generation")


def compile_programs(model_cfg, cfg: PlanConfig, meshes, compute_s, hbm_gbs: float, say=print,
                     only: tuple[str, ...] = PROGRAMS) -> list[ProgramPlan]:
    """The train step (on meshes.train), GoGI pass (meshes.score), prefill and decode loop, or the
    decode engine when cfg.engine_slots (meshes.generate), of a resolved cfg (those in `only`), each
    mesh set as the current one (the decoder's activations then keep their rows per device)."""
    from jaxcot.importance.gogi import default_layer

    programs = []

    def add(kind: str, *ps: ProgramPlan) -> None:
        programs.extend(dataclasses.replace(p, kind=kind) for p in ps)

    if "train" in only:
        with jax.set_mesh(meshes.train):
            say(f"compiling the LoRA train step ({cfg.train_rows} x {cfg.train_len} tokens) for {cfg.topology} ...")
            add("train", _train_program(model_cfg, cfg, meshes.train, compute_s))
    if "gogi" in only:
        with jax.set_mesh(meshes.score):
            g_graphdef, state_abs, _ = _abstract_decoder(model_cfg, cfg.score_dtype, meshes.score)
            layer = cfg.score_layer if cfg.score_layer is not None else default_layer(model_cfg.num_layers)
            say(f"compiling the GoGI pass ({cfg.score_rows} x {cfg.score_len} tokens, layer {layer}) ...")
            add("gogi", _gogi_program(g_graphdef, state_abs, layer, cfg, meshes.score, compute_s))
    mesh = meshes.generate
    with jax.set_mesh(mesh):
        if "generation" in only and cfg.engine_slots:
            g_graphdef, state_abs, _ = _abstract_decoder(model_cfg, cfg.generate_dtype, mesh)
            say(f"compiling the decode engine ({engine_slots(cfg, mesh)} slots, a queue of {engine_queue(cfg)} "
                f"prompts of {cfg.prompt_len} + {cfg.new_tokens} tokens) ...")
            add("generation", _engine_program(model_cfg, g_graphdef, state_abs, cfg, mesh, compute_s, hbm_gbs))
        elif "generation" in only:
            g_graphdef, state_abs, _ = _abstract_decoder(model_cfg, cfg.generate_dtype, mesh)
            say(f"compiling generation ({cfg.decode_rows} rows, {cfg.prompt_len} + {cfg.new_tokens} tokens) ...")
            add("generation", *_generation_programs(model_cfg, g_graphdef, state_abs, cfg, mesh, compute_s, hbm_gbs))
    return programs


@dataclasses.dataclass
class Slice:
    """A topology's devices and what each has: HBM (GiB), peak TFLOP/s, HBM GB/s."""

    devices: list
    chips: int
    hbm_gib: float
    peak_tf: float
    hbm_gbs: float


def topology_slice(cfg: PlanConfig) -> Slice:
    hbm_gib, peak_tf, hbm_gbs = CHIPS[cfg.chip]
    devices = topology_devices(cfg.topology)
    chips = topology_chips(cfg.topology)
    # A v4 chip's two TensorCores are two devices here (no megacore): each has half the chip.
    per_chip = max(1, len(devices) // chips)
    return Slice(devices, chips, hbm_gib / per_chip, peak_tf / per_chip, hbm_gbs / per_chip)


class Meshes(NamedTuple):
    train: Any  # the train step's
    score: Any  # the GoGI pass's
    generate: Any  # the prefill's and decode loop's


PROGRAM_MESH = {"train": "train", "gogi": "score", "generation": "generate"}  # program kind -> Meshes field
MESH_FIELD = {"train": "mesh", "gogi": "score_mesh", "generation": "infer_mesh"}  # program kind -> PlanConfig field
REMAT_FIELD = {"train": "remat", "gogi": "score_remat"}  # program kind -> its PlanConfig remat switch


def rows_field(cfg: PlanConfig, kind: str) -> str:
    """The PlanConfig field of program `kind`'s rows per call (generation's: the engine's slots when it runs)."""
    return {"train": "train_rows", "gogi": "score_rows",
            "generation": "engine_slots" if cfg.engine_slots else "decode_rows"}[kind]


def meshes(cfg: PlanConfig, devices) -> Meshes:
    from jaxcot.sharding import make_mesh

    return Meshes(*(make_mesh(*getattr(cfg, MESH_FIELD[k]), devices=devices) for k in PROGRAM_MESH))


def fit_rows(cfg: PlanConfig, meshes) -> tuple[PlanConfig, list[str]]:
    """cfg with each batch a multiple of the devices it is split over, and notes of what changed."""
    from jaxcot.importance.batching import batch_rows
    from jaxcot.sharding import batch_shards

    n = {"train_rows": batch_shards(meshes.train), "score_rows": batch_shards(meshes.score),
         "decode_rows": batch_shards(meshes.generate)}
    if cfg.engine_slots:
        n["engine_slots"] = batch_shards(meshes.generate)
    fitted = {k: batch_rows(getattr(cfg, k), n[k]) for k in n}
    notes = [f"{k} {getattr(cfg, k)} -> {v}: a multiple of the {n[k]} devices the batch is split over"
             for k, v in fitted.items() if v != getattr(cfg, k)]
    return dataclasses.replace(cfg, **fitted), notes


def _misfit_note(p: ProgramPlan, sl: Slice, cfg: PlanConfig, ms: Meshes) -> str:
    from jaxcot.sharding import batch_shards

    n_batch = batch_shards(getattr(ms, PROGRAM_MESH[p.kind]))
    need = f"{p.peak_bytes / GiB:.1f} GiB" + (" of temporaries" if p.error else "")
    remat = REMAT_FIELD.get(p.kind)
    return (f"{p.name} ({p.shapes}) needs {need} per device, more than the {sl.hbm_gib:g} GiB of a "
            f"{cfg.chip} device (XLA: {p.error or 'peak above HBM'}). Its rows per device are "
            f"{p.rows / n_batch:g}: fewer rows per step (or more chips on the batch axes), shorter "
            "rows, the weights sharded wider (mesh fsdp / tensor)"
            + (f", or {remat}=true" if remat and not getattr(cfg, remat) else "") + " make it fit"
            + " (`jaxcot plan --fit` tries them)")


def _hours(cfg: PlanConfig, programs: list[ProgramPlan]) -> dict[str, float]:
    (train,), (score,) = ([p for p in programs if p.kind == k] for k in ("train", "gogi"))
    sft_steps = math.ceil(cfg.epochs * cfg.traces * cfg.trace_tokens / (cfg.train_rows * cfg.train_len))
    # one generation call: prefill + decode loop over a batch of decode_rows questions, or the engine over a queue
    decode_s = sum(p.seconds for p in programs if p.kind == "generation")
    per_call = engine_queue(cfg) if cfg.engine_slots else cfg.decode_rows
    return {
        f"chains for {cfg.traces:,} questions x {cfg.new_tokens} tokens":
            math.ceil(cfg.traces / per_call) * decode_s / 3600,
        f"GoGI over {cfg.traces:,} traces": math.ceil(cfg.traces / cfg.score_rows) * score.seconds / 3600,
        f"LoRA SFT, {cfg.epochs} epochs": sft_steps * train.seconds / 3600,
        f"evaluation, {cfg.eval_questions} questions x {cfg.new_tokens} tokens":
            math.ceil(cfg.eval_questions / per_call) * decode_s / 3600,
    }


def with_roofline(p: ProgramPlan, sl: Slice) -> ProgramPlan:
    """p with its roofline time: XLA's FLOPs at the device's peak or its bytes at full HBM bandwidth,
    whichever is longer. The decode loop's figures are one trip of its while loop, not the loop."""
    return dataclasses.replace(p, roofline_s=max(p.flops / (sl.peak_tf * 1e12), p.bytes_accessed / (sl.hbm_gbs * 1e9)))


def fits(p: ProgramPlan, hbm_bytes: int) -> bool:
    return not p.error and p.peak_bytes <= hbm_bytes


def plan(model_cfg, cfg: PlanConfig, *, model_name: str = "model", sources: dict[str, str] | None = None,
         fit: bool = False, say=print) -> Plan:
    """Compile the programs of `model_cfg` for `cfg.topology` and time the workloads. sources:
    where each of cfg's settings came from (the header says); None fields take FALLBACK's. fit:
    for each program that does not fit, the first of `fit_candidates` that does (a note)."""
    cfg, sources = resolve(cfg, sources)
    sl = topology_slice(cfg)
    ms = meshes(cfg, sl.devices)
    cfg, notes = fit_rows(cfg, ms)
    compute_s = lambda flops: flops / (sl.peak_tf * 1e12 * cfg.mfu)  # noqa: E731
    programs = [with_roofline(p, sl) for p in compile_programs(model_cfg, cfg, ms, compute_s, sl.hbm_gbs, say)]
    _, g_state_abs, g_state = _abstract_decoder(model_cfg, cfg.generate_dtype, ms.generate)
    hbm = int(sl.hbm_gib * GiB)
    notes += [_misfit_note(p, sl, cfg, ms) for p in programs if not fits(p, hbm)]
    if cfg.engine_slots:
        notes.append(f"decode engine: timed as ceil(queue / slots) x {cfg.new_tokens} steps (every chain at "
                     f"new_tokens, the worst case), each reading the weights and the slots' caches, plus one "
                     f"prefill per prompt at 2 x parameters x {cfg.prompt_len} FLOPs; a queue of "
                     f"{engine_queue(cfg)} prompts per call")
    if fit:
        notes += [fit_program(model_cfg, cfg, kind, sl, say) for kind in PROGRAMS
                  if not all(fits(p, hbm) for p in programs if p.kind == kind)]
    largest = sorted(((k, v.shape, str(v.sharding.spec)) for k, v in _flat(g_state_abs).items()),
                     key=lambda kv: -math.prod(kv[1]))[:3]
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(g_state))
    return Plan(model=model_name, params=n_params, topology=cfg.topology, devices=len(sl.devices), chips=sl.chips,
                mesh=dict(ms.train.shape), hbm_bytes=hbm, programs=programs, hours=_hours(cfg, programs), notes=notes,
                largest=largest, settings=settings(cfg, sources))


def fit_candidates(cfg: PlanConfig, kind: str, n_devices: int) -> list[tuple[str, dict]]:
    """(the override, the PlanConfig fields it sets) to try for program `kind`, cheapest first:
    remat, then fewer rows per device, then the weights over more fsdp devices, then data devices
    moved to a tensor axis, then fsdp devices moved to it, then rows half as long."""
    mesh_key = MESH_FIELD[kind]
    data, fsdp, tensor = getattr(cfg, mesh_key)
    data = n_devices // (fsdp * tensor) if data == -1 else data
    remat = REMAT_FIELD.get(kind)
    out = [(f"{remat}=true", {remat: True})] if remat and not getattr(cfg, remat) else []
    base = {remat: True} if remat else {}
    key = rows_field(cfg, kind)
    rows = getattr(cfg, key) // 2
    while rows >= data * fsdp:
        out.append((f"{key}={rows}", {**base, key: rows}))
        rows //= 2
    d, f = data, fsdp
    while d % 2 == 0:
        d, f = d // 2, f * 2
        out.append((f"{mesh_key}=[{d},{f},{tensor}]", {**base, mesh_key: (d, f, tensor)}))
    d, t = data, tensor
    while d % 2 == 0 and t < 8:
        d, t = d // 2, t * 2
        out.append((f"{mesh_key}=[{d},{fsdp},{t}]", {**base, mesh_key: (d, fsdp, t)}))
    f, t = fsdp, tensor  # every device already holds a row: trade fsdp for tensor (activations split too)
    while f % 2 == 0 and t < 8:
        f, t = f // 2, t * 2
        out.append((f"{mesh_key}=[{data},{f},{t}]", {**base, mesh_key: (data, f, t)}))
    length = {"train": "train_len", "gogi": "score_len"}.get(kind)
    if length:  # last: shorter rows change what the job can hold, not only how it is laid out
        out.append((f"{length}={getattr(cfg, length) // 2}", {**base, length: getattr(cfg, length) // 2}))
    return out


def fit_program(model_cfg, cfg: PlanConfig, kind: str, sl: Slice, say=print) -> str:
    """The first of `fit_candidates` under which program `kind` fits, as a note."""
    hbm = int(sl.hbm_gib * GiB)
    for override, fields in fit_candidates(cfg, kind, len(sl.devices)):
        cand = dataclasses.replace(cfg, **fields)
        ms = meshes(cand, sl.devices)
        cand, _ = fit_rows(cand, ms)
        say(f"--fit: {kind} with {override} ...")
        ps = compile_programs(model_cfg, cand, ms, lambda f: 0.0, sl.hbm_gbs, say=lambda _: None, only=(kind,))
        if all(fits(p, hbm) for p in ps):
            peak = max(p.peak_bytes for p in ps) / GiB
            return f"--fit: {ps[0].name.split(' (')[0]} fits with `{override}` (peak {peak:.1f} / {sl.hbm_gib:g} GiB)"
    return f"--fit: no candidate makes the {kind} program fit (try a larger slice)"


def settings(cfg: PlanConfig, sources: dict[str, str]) -> list[str]:
    """The settings that shape the programs, each with where it came from."""
    keys = ("mesh", "score_mesh", "infer_mesh", "remat", "score_remat", *DTYPE_FIELDS, "train_rows", "train_len",
            "score_rows", "score_len", "decode_rows", "new_tokens")
    if cfg.engine_slots:
        keys += ("engine_slots", "engine_queue", "engine_budget")
    return [f"{k}={list(v) if isinstance(v := getattr(cfg, k), tuple) else v} ({sources.get(k, 'plan default')})"
            for k in keys]


def _flat(tree) -> dict[str, Any]:
    from jaxcot.sharding import path_str

    return {path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def gcloud_line(topology: str) -> str:
    """The slice as tpu/create.sh makes it: its gcloud type, hosts and runtime ('' if unknown)."""
    try:
        t = tpu_slices.gcloud_type(topology)
    except ValueError:
        return ""
    return (f"In gcloud: `{t}`, {tpu_slices.hosts(t)} host(s), runtime `{tpu_slices.runtime_version(t)}` "
            f"(`TOPOLOGY={topology} tpu/create.sh`).")


def format_plan(p: Plan, cfg: PlanConfig) -> str:
    """The plan as a Markdown table and its notes."""
    chips = p.chips
    devices = f"{p.devices} devices" + (f" ({p.devices // chips} TensorCores per chip)" if p.devices > chips else "")
    lines = [f"### {p.model} ({p.params / 1e9:.2f}B parameters) on {p.topology} ({chips} chips, {devices}; mesh "
             f"{' x '.join(f'{k}={v}' for k, v in p.mesh.items())}; {p.hbm_bytes / GiB:.0f} GiB HBM per device)", "",
             "| program | global shape | per device: args / temp / out (GiB) | peak vs HBM | GFLOP per device "
             "| est. time per call | roofline | compile (s) |",
             "|---|---|---|---|---|---|---|---|"]
    if in_gcloud := gcloud_line(p.topology):
        lines[1:1] = ["", in_gcloud]
    if p.settings:
        lines[1:1] = ["", "Settings: " + "; ".join(p.settings) + "."]
    for pr in p.programs:
        if pr.error:
            need = f"{pr.temp_bytes / GiB:.1f} GiB of temporaries" if pr.temp_bytes else "?"
            lines.append(f"| {pr.name} | {pr.shapes} | - | **does not fit**: {need} / {p.hbm_bytes / GiB:.0f} "
                         f"| - | - | - | {pr.compile_s:.0f} |")
            continue
        lines.append(f"| {pr.name} | {pr.shapes} | {pr.argument_bytes / GiB:.2f} / {pr.temp_bytes / GiB:.2f} / "
                     f"{pr.output_bytes / GiB:.2f} | {pr.peak_bytes / GiB:.1f} / {p.hbm_bytes / GiB:.0f} "
                     f"{'fits' if pr.peak_bytes <= p.hbm_bytes else '**does not fit**'} | {pr.flops / 1e9:,.0f} | "
                     f"{pr.seconds:.3g} s | {pr.roofline_s:.3g} s | {pr.compile_s:.0f} |")
    lines += ["", "Roofline: XLA's FLOPs per device at the chip's peak or its bytes accessed at full HBM bandwidth, "
              f"whichever is longer (the {'decode engine' if cfg.engine_slots else 'decode loop'}'s: one trip of "
              "its while loop).",
              "", f"Hours on this slice (compute at {100 * cfg.mfu:.0f}% MFU, decoding at {100 * cfg.hbm_eff:.0f}% of "
              f"HBM bandwidth; traces of {cfg.trace_tokens} tokens):", ""]
    lines += [f"- {k}: " + ("not timed (a program does not fit)" if math.isnan(v) else
                             f"{v:.2f} h ({v * chips:.1f} chip-hours)") for k, v in p.hours.items()]
    lines += ["", "Largest tensors: " + "; ".join(f"`{k}` {list(s)} as {spec}" for k, s, spec in p.largest)]
    lines += [f"- {n}" for n in p.notes]
    return "\n".join(lines) + "\n"


__all__ = ["CHIPS", "FALLBACK", "Plan", "PlanConfig", "ProgramPlan", "engine_queue", "engine_slots", "fit_candidates",
           "format_plan", "resolve", "gcloud_line", "plan", "topology_chips",
           "topology_devices"]
