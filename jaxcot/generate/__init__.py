"""Generation: a compiled, batched, sharded sampler with a KV cache, its Python API, and the
generate stage (`write_traces`)."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "api": ("Completion", "Generator", "default_eos_ids"),
    "config": ("EarlyExitConfig", "EngineConfig", "EvictionConfig"),
    "engine": ("EngineSpec", "SlotEngine", "engine_spec"),
    "sampler": ("DecodeSpec", "DecodeState", "Sampler"),
    "sampling": ("SamplingConfig", "sample", "token_stats"),
    "stop": ("StopPatterns", "stop_patterns", "trim_at_stop"),
    "traces": ("GenerateConfig", "load_generator", "reference_trace", "trace_record", "write_traces"),
})
