"""SFT: a mesh-sharded jitted step, LoRA or full fine-tuning, Orbax checkpoints, grain input."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("TrainConfig",),
    "loop": ("TrainResult", "TrainingDiverged", "train"),
})
