"""Generation: a compiled, batched, sharded sampler with a KV cache, its Python API and CLI."""

from jaxcot.generate.api import Completion, Generator, default_eos_ids
from jaxcot.generate.format import PromptConfig, extract_gold, last_boxed, prompt_ids, prompt_text, split_chain_answer
from jaxcot.generate.records import GenerateConfig, load_questions, trace_record
from jaxcot.generate.sampler import DecodeSpec, DecodeState, Sampler, bucket_length
from jaxcot.generate.sampling import SamplingConfig, sample, token_stats
from jaxcot.generate.stop import StopPatterns, stop_patterns, trim_at_stop

__all__ = [
    "Completion", "Generator", "default_eos_ids", "PromptConfig", "extract_gold", "last_boxed", "prompt_ids",
    "prompt_text", "split_chain_answer", "GenerateConfig", "load_questions", "trace_record", "DecodeSpec",
    "DecodeState", "Sampler", "bucket_length", "SamplingConfig", "sample", "token_stats", "StopPatterns",
    "stop_patterns", "trim_at_stop",
]
