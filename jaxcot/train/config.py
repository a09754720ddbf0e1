"""`TrainConfig`: everything one SFT run needs, loaded from YAML with `key=value` overrides.

    cfg = load_config(TrainConfig, "configs/sft-lora-tiny.yaml", ["optim.lr=1e-3"])

Defaults follow TokenSkip's recipe (docs/method.md, SFT): LoRA rank 8, alpha 16 on all linear layers,
AdamW lr 5e-5, cosine with 10% warmup, 3 epochs, effective batch 8, max length 2048.
"""

from __future__ import annotations

import dataclasses

from jaxcot.models.config import ModelConfig

LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass
class DataConfig:
    """Where examples come from and how they become rows.

    source: 'jsonl' (path = a file of {"prompt", "completion"} lines) or 'datasets' (path = a
    `save_to_disk` folder or a `load_dataset` name/builder, with `split` and `name`).
    overflow: 'drop' or 'truncate' examples longer than max_len (see `tokenize_examples`).
    packing: several examples per row (attention kept within each); else one example per row.
    buckets: row lengths batches are padded to (empty: powers of two up to max_len).
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
    shuffle: bool = True
    limit: int | None = None


@dataclasses.dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = dataclasses.field(default_factory=lambda: list(LINEAR_LAYERS))


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


@dataclasses.dataclass
class MeshConfig:
    """(data, fsdp, tensor) device mesh over the first `devices` devices (0: all of them);
    data = -1 takes the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    devices: int = 0


@dataclasses.dataclass
class CheckpointConfig:
    """Orbax checkpoints under `<output_dir>/checkpoints`: every `every` steps and at the end
    (enabled=false: none at all, and no resume; for throwaway runs and benchmarks)."""

    enabled: bool = True
    every: int = 500
    keep: int = 3
    async_save: bool = True
    resume: bool = True


@dataclasses.dataclass
class DistributedConfig:
    """Multi-host start (`jax.distributed.initialize`); all None: single host, or the
    platform's auto-detection (TPU pods, SLURM) when `enabled` is true."""

    enabled: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


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
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int | None = 3
    max_steps: int | None = None
    seed: int = 0
    compute_dtype: str = "float32"
    param_dtype: str = "float32"
    export_dir: str | None = None
    export: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.method not in ("lora", "full"):
            raise ValueError(f"method must be 'lora' or 'full', got {self.method!r}")
        if (self.init_from is None) == (self.model is None):
            raise ValueError("set exactly one of init_from (weights to start from) and model (random init)")
        for name in ("compute_dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16"):
                raise ValueError(f"{name} must be 'float32' or 'bfloat16', got {getattr(self, name)!r}")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("epochs: null (as many as the steps need) needs max_steps")
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} must be a positive multiple of grad_accum "
                             f"{self.grad_accum}")

    @property
    def resolved_export_dir(self) -> str:
        import os

        return self.export_dir or os.path.join(self.output_dir, "export")


# Keys that may change between a run and its resumption (they do not affect the numbers).
RESUMABLE_KEYS = ("progress", "export", "export_dir", "checkpoint", "distributed")


__all__ = [
    "CheckpointConfig", "DataConfig", "DistributedConfig", "LINEAR_LAYERS", "LoraConfig", "MeshConfig",
    "OptimConfig", "RESUMABLE_KEYS", "TrainConfig",
]
