"""Compression rules by name (ADS, static ratio, step entropy, random, original, and a user's own:
`jaxcot.compress.registry`), text rebuild, SFT set builders."""

from jaxcot.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "config": ("METHODS", "CompressConfig"),
    "pipeline": ("CompressOutput", "compress_records", "format_table", "write_compressed"),
    "registry": ("RULES", "Chain", "Decision", "Rule"),
})
