"""Models: one NNX decoder family and its checkpoint I/O."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "adapters": ("apply_peft_adapter", "is_peft_adapter", "save_peft_adapter"),
    "config": ("ModelConfig", "RopeConfig"),
    "decoder": ("Decoder", "DecoderOutput", "KVCache", "abstract_model", "fuse_for_decoding", "init_model"),
    "gguf": ("load_gguf",),
    "loading": ("load_model",),
    "names": ("MODEL_ALIASES", "gemma3_270m_gguf_path", "resolve_model", "shipped_teacher_path", "smollm2_gguf_path"),
    "params": ("build_model", "hf_state_dict", "load_hf", "save_hf"),
    "tokenizer": ("load_tokenizer",),
})
