"""Tokenizers from a HF folder (transformers' AutoTokenizer) or from a GGUF file's metadata (no torch)."""

from __future__ import annotations

import json
import os

# Files any one of which makes a folder a tokenizer folder for AutoTokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(path: str | os.PathLike):
    """A `PreTrainedTokenizerBase` (chat template included when the source has one).

    `path`: a HF folder with tokenizer files, or a ``.gguf`` file (its ``tokenizer.ggml.*`` and
    ``tokenizer.chat_template`` metadata). A tokenizer without a pad token gets its eos token as
    pad, so batches can be padded (the attention mask, not the pad id, marks padding). A hub id
    is read from the Hugging Face cache (`jaxcot.models.names.resolve_model`).
    """
    from jaxcot.models.names import resolve_model

    path = resolve_model(path)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"{path}: not a tokenizer source (expected a HF folder or a .gguf file)")
        try:
            tok = gguf_tokenizer(path)
        except (KeyError, ValueError, NotImplementedError) as e:
            raise ValueError(f"{path}: cannot build a tokenizer from this GGUF file's metadata ({e})") from e
    elif os.path.isdir(path):
        if not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
            raise FileNotFoundError(f"{path}: no tokenizer files (looked for {', '.join(_TOKENIZER_FILES)})")
        try:
            if _generic_fast(path):
                # transformers 5 swaps in a model-specific class for some model types (qwen2 ->
                # Qwen2Tokenizer, which rebuilds the pre-tokenizer); a folder that declares the
                # generic class means its tokenizer.json exactly, so load that.
                from transformers import PreTrainedTokenizerFast

                tok = PreTrainedTokenizerFast.from_pretrained(path)
            else:
                # AutoTokenizer imports transformers' config machinery, and with it torch when
                # installed (a start-up cost: docs/performance.md): only folders need it, not GGUF files
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot load the tokenizer ({e})") from e
    else:
        raise FileNotFoundError(f"{path}: no such tokenizer folder or GGUF file")
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


# GGUF special-token keys -> the tokenizer attribute each one sets (as transformers reads them)
_GGUF_SPECIALS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                  "pad_token": "padding_token_id"}


def gguf_metadata(path: str, prefixes: tuple[str, ...] = ("tokenizer.", "general.architecture")) -> dict:
    """The metadata values of a GGUF file whose keys start with `prefixes`, as Python values."""
    from jaxcot.models.gguf_file import read_gguf

    return {k: v for k, v in read_gguf(path).metadata.items() if k.startswith(prefixes)}


def gguf_tokenizer(path: str):
    """A fast tokenizer from a GGUF file's `tokenizer.*` metadata, without torch.

    transformers' own GGUF path reads the file with a reader that imports torch; this reads it
    with the `gguf` package and hands the same values to transformers' converters
    (`convert_gguf_tokenizer`), so the vocabulary, merges, pre-tokenizer, special tokens, BOS rule
    and chat template are the ones `AutoTokenizer.from_pretrained(folder, gguf_file=...)` builds.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    meta = gguf_metadata(path)
    if "tokenizer.ggml.tokens" not in meta:
        raise ValueError("no tokenizer.ggml.tokens in the metadata")
    grouped = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
               for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer, config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tokenizer.get("tokenizer_type") == "llama":  # sentencepiece files without the flag: llama.cpp adds BOS
        config.setdefault("add_bos_token", True)
    elif tokenizer.get("tokenizer_type") == "gemma4":  # its chat template writes <bos> itself
        config["add_bos_token"] = False
    for name, key in _GGUF_SPECIALS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(meta["general.architecture"], tokenizer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **{**config, **extra})


def _generic_fast(folder: str) -> bool:
    """Whether the folder's tokenizer_config.json declares the generic fast class over a tokenizer.json."""
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    if not (os.path.exists(cfg_path) and os.path.exists(os.path.join(folder, "tokenizer.json"))):
        return False
    with open(cfg_path) as f:
        declared = json.load(f).get("tokenizer_class")
    return declared in ("TokenizersBackend", "PreTrainedTokenizerFast")


__all__ = ["gguf_metadata", "gguf_tokenizer", "load_tokenizer"]
