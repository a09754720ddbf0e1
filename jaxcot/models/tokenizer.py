"""Tokenizers through transformers' AutoTokenizer, from a HF folder or from a GGUF file's metadata."""

from __future__ import annotations

import json
import os

# Files any one of which makes a folder a tokenizer folder for AutoTokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(path: str | os.PathLike):
    """A `PreTrainedTokenizerBase` (chat template included when the source has one).

    `path`: a HF folder with tokenizer files, or a ``.gguf`` file (its ``tokenizer.ggml.*`` and
    ``tokenizer.chat_template`` metadata). A tokenizer without a pad token gets its eos token as
    pad, so batches can be padded (the attention mask, not the pad id, marks padding).
    """
    from transformers import AutoTokenizer

    path = os.fspath(path)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ValueError(f"{path}: not a tokenizer source (expected a HF folder or a .gguf file)")
        folder, name = os.path.split(os.path.abspath(path))
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        except Exception as e:
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
                tok = AutoTokenizer.from_pretrained(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot load the tokenizer ({e})") from e
    else:
        raise FileNotFoundError(f"{path}: no such tokenizer folder or GGUF file")
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _generic_fast(folder: str) -> bool:
    """Whether the folder's tokenizer_config.json declares the generic fast class over a tokenizer.json."""
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    if not (os.path.exists(cfg_path) and os.path.exists(os.path.join(folder, "tokenizer.json"))):
        return False
    with open(cfg_path) as f:
        declared = json.load(f).get("tokenizer_class")
    return declared in ("TokenizersBackend", "PreTrainedTokenizerFast")


__all__ = ["load_tokenizer"]
