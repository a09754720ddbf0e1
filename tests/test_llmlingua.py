"""LLMLingua-2: the NNX XLM-RoBERTa classifier against transformers' PyTorch one, and the
character-offset mapping onto a decoder's chain tokens."""

import numpy as np
import pytest
import torch

from jaxcot.data.wordtok import build_word_tokenizer
from jaxcot.importance.llmlingua import LLMLinguaScorer, chars_to_tokens, load_xlmr

TEXT = "First add 12 and 30 to get 42 . Then halve it : 21 .\nSo we keep 21 , not 42 ."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random XLMRobertaForTokenClassification saved with save_pretrained, plus a tokenizer."""
    import transformers as tf

    torch.manual_seed(0)
    tok = build_word_tokenizer([TEXT])
    tok.cls_token, tok.sep_token = "<|im_start|>", "<|endoftext|>"
    cfg = tf.XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, num_labels=2, pad_token_id=0, type_vocab_size=1,
    )
    model = tf.XLMRobertaForTokenClassification(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.1) + (1.0 if "LayerNorm.weight" in name else 0.0))
    path = tmp_path_factory.mktemp("llmlingua")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def test_logits_match_transformers(checkpoint):
    path, hf, _ = checkpoint
    ours = load_xlmr(path)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, hf.config.vocab_size, (3, 12))
    mask = np.ones_like(ids, bool)
    mask[1, 9:] = False
    mask[2, 5:] = False
    ids[~mask] = hf.config.pad_token_id
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64))).logits.numpy()
    got = np.asarray(ours(ids, mask))
    assert np.abs(got - ref)[mask].max() <= 1e-4


def test_keep_probs_match_transformers_and_map_onto_pieces(checkpoint):
    path, hf, tok = checkpoint
    scorer = LLMLinguaScorer.from_pretrained(path, max_len=10, batch_size=2)  # forces several windows
    probs, offsets = scorer.piece_probs(TEXT)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(probs) == len(ids) == len(offsets)
    ref = []
    for k in range(0, len(ids), 8):  # the same windows of 8 pieces between CLS and SEP
        row = [tok.cls_token_id] + ids[k:k + 8] + [tok.sep_token_id]
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([row])).logits[0, 1:-1]
        ref.append(torch.softmax(logits, -1)[:, 1].numpy())
    np.testing.assert_allclose(probs, np.concatenate(ref), atol=1e-5)
    # Decoder pieces that split and merge the classifier's pieces, spelling the same text.
    pieces = ["Fir", "st", " add 1", "2", " and 30 to get 42 . ", "Then halve it : 21 .\nSo we keep 21 , not 42 ."]
    assert "".join(pieces) == TEXT
    scores = scorer.token_scores(TEXT, pieces)
    first = probs[0]  # "First" is one classifier piece
    np.testing.assert_allclose(scores[:2], [first, first], atol=1e-6)
    assert scores.shape == (len(pieces),) and np.all((scores > 0) & (scores < 1))
    with pytest.raises(ValueError, match="spell"):
        scorer.token_scores(TEXT, pieces[:-1])


def test_chars_to_tokens_fills_uncovered_tokens():
    chars = np.array([0.2, 0.4, np.nan, np.nan, 0.9, np.nan])
    out = chars_to_tokens(chars, ["ab", " ", " c", "d"])
    np.testing.assert_allclose(out, [0.3, 0.9, 0.9, 0.9], atol=1e-6)
    np.testing.assert_allclose(chars_to_tokens(np.array([0.5, np.nan]), ["a", " "]), [0.5, 0.5])
