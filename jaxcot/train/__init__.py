"""SFT: a mesh-sharded jitted step, LoRA or full fine-tuning, Orbax checkpoints, grain input."""

from jaxcot.train.config import TrainConfig
from jaxcot.train.loop import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train"]
