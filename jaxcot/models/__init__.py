"""Models: one NNX decoder family and its checkpoint I/O."""

from jaxcot.models.config import ModelConfig, RopeConfig
from jaxcot.models.decoder import Decoder, DecoderOutput, KVCache, abstract_model, init_model
from jaxcot.models.params import build_model, hf_state_dict, load_hf, save_hf

__all__ = [
    "ModelConfig", "RopeConfig", "Decoder", "DecoderOutput", "KVCache", "abstract_model", "init_model",
    "build_model", "hf_state_dict", "load_hf", "save_hf",
]
