"""Compression rules (ADS, static ratio, step entropy, random), text rebuild, SFT set builders."""

from jaxcot.compress.pipeline import METHODS, CompressConfig, CompressOutput, compress_records, format_table

__all__ = ["METHODS", "CompressConfig", "CompressOutput", "compress_records", "format_table"]
