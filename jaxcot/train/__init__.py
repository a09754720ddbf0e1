"""SFT: a mesh-sharded jitted step, LoRA or full fine-tuning, Orbax checkpoints, grain input."""

from jaxcot.train.config import TrainConfig

_LOOP = ("TrainingDiverged", "TrainResult", "train")


def __getattr__(name: str):
    # The loop pulls in grain and orbax (~0.3 s); a command that only reads TrainConfig (every
    # `jaxcot` command builds the `run` parser) should not pay for them.
    if name in _LOOP:
        from jaxcot.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'jaxcot.train' has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train"]
