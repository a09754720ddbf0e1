"""`TrainConfig`: everything one SFT run needs, loaded from YAML with `key=value` overrides.

    cfg = load_config(TrainConfig, "configs/sft-lora-tiny.yaml", ["optim.lr=1e-3"])

Defaults follow TokenSkip's recipe (docs/method.md, SFT): LoRA rank 8, alpha 16 on all linear layers,
AdamW lr 5e-5, cosine with 10% warmup, 3 epochs, effective batch 8, max length 2048.
"""

from __future__ import annotations

import dataclasses

from jaxcot.config import MeshConfig, check, check_choice, check_counts, check_range
from jaxcot.distributed import DistributedConfig
from jaxcot.models.config import ModelConfig

LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass
class DataConfig:
    """Where examples come from and how they become rows.

    source: 'jsonl' (path = a file of {"prompt", "completion"} lines) or 'datasets' (path = a
    `save_to_disk` folder or a `load_dataset` name/builder, with `split` and `name`).
    overflow: 'drop' or 'truncate' examples longer than max_len (see `tokenize_examples`).
    packing: several examples per row (attention kept within each); else one example per row.
    buckets: row lengths batches are padded to; empty: a grid of `bucket_steps` lengths per
    octave up to max_len (`jaxcot.shapes`; 2: 16, 24, 32, 48, ..., each a compiled train step).
    fit_buckets (with empty buckets): the run's batches get as many distinct lengths as that grid
    would give them, chosen from a 4x finer grid with the least padding (`run_buckets`).
    """

    path: str = ""
    source: str = "jsonl"
    split: str = "train"
    name: str | None = None
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    max_len: int = 2048
    overflow: str = "drop"
    packing: bool = False
    buckets: list[int] = dataclasses.field(default_factory=list)
    bucket_steps: int = 2
    fit_buckets: bool = True
    shuffle: bool = True
    limit: int | None = None

    def __post_init__(self):
        check_choice(self, "source", ("jsonl", "datasets"))
        check_choice(self, "overflow", ("drop", "truncate"))
        check_range(self, "max_len", 2)
        check_range(self, "limit", 1, optional=True)
        check(all(b >= 1 for b in self.buckets), "buckets", f"must be positive lengths, got {self.buckets}")
        check(self.bucket_steps in (1, 2, 4, 8, 16), "bucket_steps",
              f"must be 1, 2, 4, 8 or 16, got {self.bucket_steps}")


@dataclasses.dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = dataclasses.field(default_factory=lambda: list(LINEAR_LAYERS))

    def __post_init__(self):
        check_range(self, "rank", 1)
        check_range(self, "alpha", 0, lo_open=True)
        check_range(self, "dropout", 0, 1, hi_open=True)
        bad = [t for t in self.targets if t not in LINEAR_LAYERS]
        check(bool(self.targets) and not bad, "targets", f"must be a non-empty subset of {list(LINEAR_LAYERS)}, "
              f"got {self.targets}")


@dataclasses.dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to `min_lr_ratio * lr`; global-norm clipping.

    warmup_steps, when set, overrides warmup_ratio (a fraction of the total steps).
    Weight decay applies to matrices only (not norms or biases).
    """

    lr: float = 5e-5
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0

    def __post_init__(self):
        check_range(self, "lr", 0, lo_open=True)
        check_range(self, "warmup_ratio", 0, 1)
        check_range(self, "warmup_steps", 0, optional=True)
        check_range(self, "min_lr_ratio", 0, 1)
        check_range(self, "weight_decay", 0)
        check_range(self, "b1", 0, 1, hi_open=True)
        check_range(self, "b2", 0, 1, hi_open=True)
        check_range(self, "eps", 0, lo_open=True)
        check_range(self, "clip_norm", 0)  # 0: no clipping


@dataclasses.dataclass
class CheckpointConfig:
    """Orbax checkpoints under `<output_dir>/checkpoints`: every `every` steps and at the end
    (enabled=false: none at all, and no resume; for throwaway runs and benchmarks)."""

    enabled: bool = True
    every: int = 500
    keep: int = 3
    async_save: bool = True
    resume: bool = True

    def __post_init__(self):
        check_counts(self, "every", "keep")


@dataclasses.dataclass
class LogConfig:
    """What training reports, and how often. Step metrics stay on the device and are fetched every
    `every` steps (and before each checkpoint, callback and the end): fetching them each step would
    make the host wait for the device every step. tensorboard: event files under
    <output_dir>/tensorboard (process 0). profile_from: trace steps profile_from ..
    profile_from + profile_steps - 1 with `jax.profiler` into <output_dir>/profile (TensorBoard's
    profile plugin or Perfetto read it)."""

    every: int = 10
    tensorboard: bool = True
    profile_from: int | None = None
    profile_steps: int = 3

    def __post_init__(self):
        check_counts(self, "every", "profile_steps")
        check_range(self, "profile_from", 1, optional=True)


@dataclasses.dataclass
class TrainConfig:
    """One SFT run.

    The model comes from `init_from` (HF folder, a previous export, or a .gguf file) or, with
    `model` set, is randomly initialised from that `ModelConfig` (training from scratch; a
    vocab_size of 0 takes the tokenizer's size). `tokenizer`: a HF folder / .gguf path, 'word'
    for a word-level tokenizer built from the training texts, or None for init_from's own.
    method: 'lora' (only adapters train) or 'full'.
    batch_size: examples (rows, when packing) per optimizer step, across all processes;
    grad_accum splits it into micro-batches. max_steps caps the step count of `epochs` epochs;
    epochs None makes as many passes as max_steps needs (so the step budget ends the run).
    compute_dtype 'bfloat16' runs matmuls in bf16 over param_dtype (float32) master weights.
    remat: the backward pass recomputes each block's forward instead of keeping its activations
    (about a third more compute; what lets long rows of a multi-billion model fit a TPU's HBM,
    see `jaxcot plan`). The same gradients, so a run may turn it on or off when resuming.
    export: at the end, write the model to `export_dir` (default <output_dir>/export) as a HF
    folder with LoRA merged ('merged'), and/or, for LoRA, its factors alone as a PEFT adapter
    folder in `adapter_dir` (default <export_dir>-adapter) ('adapter'); export_dtype: the saved
    tensors' dtype. The three folders may be remote URLs (gs://...; `jaxcot.storage`).
    """

    output_dir: str = "runs/sft"
    init_from: str | None = None
    model: ModelConfig | None = None
    tokenizer: str | None = None
    method: str = "lora"
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int | None = 3
    max_steps: int | None = None
    seed: int = 0
    compute_dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    export_dir: str | None = None
    adapter_dir: str | None = None
    export: bool = True
    export_format: str = "both"
    export_dtype: str = "float32"
    progress: bool = True

    def __post_init__(self):
        check_choice(self, "method", ("lora", "full"))
        check((self.init_from is None) != (self.model is None), "init_from",
              "set exactly one of init_from (weights to start from) and model (random init)")
        check_choice(self, "compute_dtype", ("float32", "bfloat16"))
        check_choice(self, "param_dtype", ("float32", "bfloat16"))
        check_choice(self, "export_format", ("merged", "adapter", "both"))
        check_choice(self, "export_dtype", ("float32", "bfloat16"))
        check(self.export_format != "adapter" or self.method == "lora", "export_format",
              "'adapter' exports LoRA factors; method 'full' has none (use 'merged')")
        check_counts(self, "batch_size", "grad_accum")
        check(self.batch_size % self.grad_accum == 0, "batch_size",
              f"{self.batch_size} must be a multiple of grad_accum {self.grad_accum}")
        check_range(self, "epochs", 1, optional=True)
        check_range(self, "max_steps", 1, optional=True)
        check(self.epochs is not None or self.max_steps is not None, "epochs",
              "null (as many passes as the steps need) needs max_steps")

    @property
    def resolved_export_dir(self) -> str:
        import os

        return self.export_dir or os.path.join(self.output_dir, "export")

    @property
    def resolved_adapter_dir(self) -> str:
        return self.adapter_dir or self.resolved_export_dir.rstrip("/") + "-adapter"


# The TrainConfig fields that do not change a student's trained weights: where files go, how the
# run reports, checkpoints and exports, how its processes meet, and remat (the same gradients). The
# one list of them: a resumed run may change them (`jaxcot.train.runtime.resume`), and `jaxcot run`'s
# fingerprint of a student derives its list from this one (`jaxcot.run.stages`).
RESUMABLE_KEYS = ("output_dir", "progress", "export", "export_dir", "adapter_dir", "export_format", "export_dtype",
                  "checkpoint", "distributed", "log", "remat")


__all__ = [
    "CheckpointConfig", "DataConfig", "DistributedConfig", "LINEAR_LAYERS", "LogConfig", "LoraConfig", "MeshConfig",
    "OptimConfig", "RESUMABLE_KEYS", "TrainConfig",
]
