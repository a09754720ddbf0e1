"""LLMLingua-2 importance: a Flax NNX XLM-RoBERTa token classifier from a local HF folder.

LLMLingua-2 (TokenSkip's importance source) labels every word piece "discard" (0) or "keep" (1);
the importance of a piece is p(keep). The folder is a transformers
`XLMRobertaForTokenClassification` checkpoint (config.json, model.safetensors, tokenizer files).
Scores reach the decoder's chain tokens through character offsets: each character takes the
keep-probability of the piece covering it, and a chain token takes the mean over its characters
(tokens covering only uncovered characters, e.g. spaces, take their next neighbour's score, or the
previous one at the end).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcot.shapes import bucket_length

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class XLMRConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    num_labels: int = 2
    hidden_act: str = "gelu"

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "XLMRConfig":
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported position_embedding_type {d['position_embedding_type']!r}")
        num_labels = d.get("num_labels", len(d.get("id2label", {})) or 2)
        return cls(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], num_layers=d["num_hidden_layers"],
            num_heads=d["num_attention_heads"], intermediate_size=d["intermediate_size"],
            max_position_embeddings=d["max_position_embeddings"], type_vocab_size=d.get("type_vocab_size", 1),
            layer_norm_eps=d.get("layer_norm_eps", 1e-5), pad_token_id=d.get("pad_token_id", 1),
            num_labels=num_labels, hidden_act=d.get("hidden_act", "gelu"),
        )


_ACTS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


class Dense(nnx.Module):
    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out)) * 0.02)
        self.bias = nnx.Param(jnp.zeros((d_out,)))

    def __call__(self, x: Array) -> Array:
        return x @ self.kernel[...] + self.bias[...]


class LayerNorm(nnx.Module):
    def __init__(self, d: int, eps: float):
        self.weight = nnx.Param(jnp.ones((d,)))
        self.bias = nnx.Param(jnp.zeros((d,)))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        mu = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: XLMRConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.query, self.key, self.value = (Dense(d, d, rngs=rngs) for _ in range(3))
        self.attn_out = Dense(d, d, rngs=rngs)
        self.attn_norm = LayerNorm(d, cfg.layer_norm_eps)
        self.intermediate = Dense(d, f, rngs=rngs)
        self.out = Dense(f, d, rngs=rngs)
        self.out_norm = LayerNorm(d, cfg.layer_norm_eps)
        self.num_heads = cfg.num_heads
        self.act = _ACTS[cfg.hidden_act]

    def __call__(self, x: Array, bias: Array) -> Array:
        b, t, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        q, k, v = (f(x).reshape(b, t, h, dh) for f in (self.query, self.key, self.value))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh) + bias
        attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v).reshape(b, t, d)
        x = self.attn_norm(self.attn_out(attn) + x)
        return self.out_norm(self.out(self.act(self.intermediate(x))) + x)


class XLMRobertaTokenClassifier(nnx.Module):
    """XLM-RoBERTa encoder + linear token classifier (inference: no dropout)."""

    def __init__(self, cfg: XLMRConfig, *, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.config = cfg
        self.word_embeddings = nnx.Param(jax.random.normal(rngs.params(), (cfg.vocab_size, d)) * 0.02)
        self.position_embeddings = nnx.Param(jax.random.normal(rngs.params(), (cfg.max_position_embeddings, d)) * 0.02)
        self.token_type_embeddings = nnx.Param(jax.random.normal(rngs.params(), (cfg.type_vocab_size, d)) * 0.02)
        self.embed_norm = LayerNorm(d, cfg.layer_norm_eps)
        self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.classifier = Dense(d, cfg.num_labels, rngs=rngs)

    def __call__(self, input_ids: Array, mask: Array) -> Array:
        """input_ids [B, T] int, mask [B, T] bool -> logits [B, T, num_labels] float32.

        Positions follow RoBERTa: pad_id + 1 + (count of non-pad ids up to the slot)."""
        pad = self.config.pad_token_id
        nonpad = (input_ids != pad).astype(jnp.int32)
        positions = jnp.cumsum(nonpad, axis=1) * nonpad + pad
        x = (jnp.take(self.word_embeddings[...], input_ids, axis=0)
             + jnp.take(self.position_embeddings[...], positions, axis=0)
             + self.token_type_embeddings[...][0])
        x = self.embed_norm(x)
        bias = jnp.where(mask[:, None, None, :], 0.0, -1e30)
        for layer in self.layers:
            x = layer(x, bias)
        return self.classifier(x).astype(jnp.float32)


# HF tensor names, relative to "roberta.encoder.layer.{i}." for layer parameters.
_LAYER_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense", "out": "output.dense", "out_norm": "output.LayerNorm",
}


def _hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
    """Our parameter path -> (HF tensor name, transpose?)."""
    leaf = path[-1]
    suffix = "weight" if leaf in ("kernel", "weight") else leaf
    if path[0] == "classifier":
        return f"classifier.{suffix}", leaf == "kernel"
    if path[0] == "embed_norm":
        return f"roberta.embeddings.LayerNorm.{suffix}", False
    if path[0] == "layers":
        return f"roberta.encoder.layer.{path[1]}.{_LAYER_NAMES[path[2]]}.{suffix}", leaf == "kernel"
    return f"roberta.embeddings.{path[0]}.weight", False


def load_xlmr(path: str | os.PathLike) -> XLMRobertaTokenClassifier:
    """Load an `XLMRobertaForTokenClassification` safetensors folder; every tensor must fit."""
    from safetensors.numpy import load_file

    from jaxcot.sharding import path_str

    path = os.fspath(path)
    cfg_file = os.path.join(path, "config.json")
    weights = os.path.join(path, "model.safetensors")
    for f in (cfg_file, weights):
        if not os.path.exists(f):
            raise FileNotFoundError(f"{path}: no {os.path.basename(f)} "
                                    "(need an XLMRobertaForTokenClassification folder)")
    with open(cfg_file) as f:
        cfg = XLMRConfig.from_hf_dict(json.load(f))
    tensors = {k[len("xlm_roberta."):] if k.startswith("xlm_roberta.") else k: v for k, v in load_file(weights).items()}
    model = nnx.eval_shape(lambda: XLMRobertaTokenClassifier(cfg, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model, nnx.Param)
    used = set()

    def fill(p, leaf):
        name, transpose = _hf_name(tuple(path_str(p).split("/")))
        if name not in tensors:
            raise KeyError(f"{weights}: missing tensor {name!r} (shape {tuple(leaf.shape)})")
        arr = tensors[name].T if transpose else tensors[name]
        if tuple(arr.shape) != tuple(leaf.shape):
            raise ValueError(f"{weights}: tensor {name!r} has shape {arr.shape}, expected {tuple(leaf.shape)}")
        used.add(name)
        return jnp.asarray(arr, jnp.float32)

    params = jax.tree_util.tree_map_with_path(fill, params)
    extra = sorted(n for n in set(tensors) - used
                   if not n.startswith("roberta.pooler.") and not n.endswith("position_ids"))
    if extra:
        raise ValueError(f"{weights}: unexpected tensors {extra[:8]}")
    return nnx.merge(graphdef, params)


@functools.partial(jax.jit, static_argnums=(0,))
def _keep_probs(graphdef, state, ids, mask):
    logits = nnx.merge(graphdef, state)(ids, mask)
    return jax.nn.softmax(logits, axis=-1)[..., 1]


def chars_to_tokens(char_scores: np.ndarray, pieces: Sequence[str]) -> np.ndarray:
    """Per-character scores [len(text)] (NaN where uncovered) -> per-token scores [len(pieces)]
    for tokens whose pieces partition the text: the mean over a token's covered characters;
    tokens with none take the next token's score (the previous one's at the end; 0 if none)."""
    out = np.full(len(pieces), np.nan, np.float64)
    pos = 0
    for i, p in enumerate(pieces):
        vals = char_scores[pos:pos + len(p)]
        vals = vals[~np.isnan(vals)]
        if vals.size:
            out[i] = vals.mean()
        pos += len(p)
    for i in range(len(out) - 2, -1, -1):  # back-fill from the next token
        if np.isnan(out[i]):
            out[i] = out[i + 1]
    for i in range(1, len(out)):
        if np.isnan(out[i]):
            out[i] = out[i - 1]
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


class LLMLinguaScorer:
    """Keep-probabilities from an LLMLingua-2 checkpoint, mapped onto a decoder's chain tokens."""

    def __init__(self, model: XLMRobertaTokenClassifier, tokenizer, *, max_len: int | None = None,
                 batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        limit = model.config.max_position_embeddings - model.config.pad_token_id - 1
        self.max_len = min(max_len or 512, limit)
        self.batch_size = batch_size
        self._graphdef, self._state = nnx.split(model)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kw) -> "LLMLinguaScorer":
        from transformers import AutoTokenizer

        return cls(load_xlmr(path), AutoTokenizer.from_pretrained(os.fspath(path)), **kw)

    def piece_probs(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(p_keep [n] float32, offsets [n, 2]) for the classifier's word pieces of `text`, in
        windows of at most max_len tokens (with the tokenizer's CLS/SEP around each window)."""
        tok = self.tokenizer
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
        head = [tok.cls_token_id] if tok.cls_token_id is not None else []
        tail = [tok.sep_token_id] if tok.sep_token_id is not None else []
        width = self.max_len - len(head) - len(tail)
        windows = [ids[k:k + width] for k in range(0, len(ids), width)]
        probs = []
        pad = self.model.config.pad_token_id
        for k in range(0, len(windows), self.batch_size):
            group = windows[k:k + self.batch_size]
            t = bucket_length(max(len(w) for w in group) + len(head) + len(tail), 16)
            arr = np.full((self.batch_size, t), pad, np.int32)
            msk = np.zeros((self.batch_size, t), bool)
            for r, w in enumerate(group):
                row = head + w + tail
                arr[r, :len(row)], msk[r, :len(row)] = row, True
            p = np.asarray(_keep_probs(self._graphdef, self._state, jnp.asarray(arr), jnp.asarray(msk)))
            probs += [p[r, len(head):len(head) + len(w)] for r, w in enumerate(group)]
        return (np.concatenate(probs) if probs else np.zeros(0, np.float32)), offsets

    def token_scores(self, chain: str, pieces: Sequence[str]) -> np.ndarray:
        """p(keep) per decoder chain token [len(pieces)]; ``"".join(pieces)`` must be `chain`."""
        if "".join(pieces) != chain:
            raise ValueError("pieces do not spell the chain")
        probs, offsets = self.piece_probs(chain)
        chars = np.full(len(chain), np.nan)
        for p, (s, e) in zip(probs, offsets):
            chars[s:e] = p
        return chars_to_tokens(chars, pieces)


__all__ = ["LLMLinguaScorer", "XLMRConfig", "XLMRobertaTokenClassifier", "chars_to_tokens", "load_xlmr"]
