"""A small word-level tokenizer built from a corpus (testbed and tests), as a HF fast tokenizer.

Words carry a leading '▁' for the space before them; digits are single tokens; punctuation and
newlines are their own tokens, so decoding reproduces the text exactly for in-vocabulary input.
It has a ChatML chat template, like SmolLM2 and Qwen, so the same prompt code serves both.
"""

from __future__ import annotations

import collections
from typing import Iterable

SPECIALS = ("<pad>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _pre_tokenizer(attach_space: bool = False):
    """Split on newlines, then words (a leading '▁' marks the space before them), then single
    digits and punctuation. attach_space: the space before a digit or punctuation mark stays on
    it ('▁1', '▁+') instead of being a bare '▁' token, which shortens sequences by about a fifth
    on arithmetic text."""
    from tokenizers import Regex, pre_tokenizers

    if attach_space:
        pieces = [
            pre_tokenizers.Split(Regex(r"▁?\d"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"▁?[^\w\s▁]"), behavior="isolated"),
        ]
    else:
        pieces = [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation(behavior="isolated")]
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
            *pieces,
        ]
    )


def build_word_tokenizer(
    texts: Iterable[str], *, min_count: int = 1, extra_tokens: Iterable[str] = (), attach_space: bool = False
):
    """A `PreTrainedTokenizerFast` whose vocabulary is every piece of `texts` seen min_count times.
    attach_space: see `_pre_tokenizer`.

    Specials: <pad> (id 0), <unk>, <|endoftext|> (eos), <|im_start|>, <|im_end|> (end of turn).
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer(attach_space)
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        counts.update(piece for piece, _ in pre.pre_tokenize_str(text))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    seen = sorted(p for p, c in counts.items() if c >= min_count)
    for piece in ["\n", "system", "user", "assistant"] + list(extra_tokens) + seen:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        bos_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast
