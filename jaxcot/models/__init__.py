"""Models: one NNX decoder family and its checkpoint I/O."""

from jaxcot.models.adapters import apply_peft_adapter, is_peft_adapter, save_peft_adapter
from jaxcot.models.config import ModelConfig, RopeConfig
from jaxcot.models.decoder import Decoder, DecoderOutput, KVCache, abstract_model, fuse_for_decoding, init_model
from jaxcot.models.gguf import load_gguf
from jaxcot.models.loading import gemma3_270m_gguf_path, load_model, smollm2_gguf_path
from jaxcot.models.params import build_model, hf_state_dict, load_hf, save_hf
from jaxcot.models.tokenizer import load_tokenizer

__all__ = [
    "ModelConfig", "RopeConfig", "Decoder", "DecoderOutput", "KVCache", "abstract_model", "fuse_for_decoding",
    "init_model",
    "build_model", "hf_state_dict", "load_hf", "save_hf",
    "apply_peft_adapter", "is_peft_adapter", "save_peft_adapter",
    "load_gguf", "load_model", "smollm2_gguf_path", "gemma3_270m_gguf_path", "load_tokenizer",
]
