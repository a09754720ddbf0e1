"""Generation: a compiled, batched, sharded sampler with a KV cache, its Python API, and the
generate stage (`write_traces`)."""

from jaxcot.generate.api import Completion, Generator, default_eos_ids
from jaxcot.generate.sampler import DecodeSpec, DecodeState, Sampler, bucket_length
from jaxcot.generate.sampling import SamplingConfig, sample, token_stats
from jaxcot.generate.stop import StopPatterns, stop_patterns, trim_at_stop
from jaxcot.generate.traces import GenerateConfig, load_generator, reference_trace, trace_record, write_traces

__all__ = [
    "Completion", "Generator", "default_eos_ids", "DecodeSpec", "DecodeState", "Sampler", "bucket_length",
    "SamplingConfig", "sample", "token_stats", "StopPatterns", "stop_patterns", "trim_at_stop", "GenerateConfig",
    "load_generator", "reference_trace", "trace_record", "write_traces",
]
