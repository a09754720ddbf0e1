"""Weight mapping between the NNX decoder and HF checkpoints (safetensors), and HF export.

Our parameter paths mirror HF's names, so the mapping is mechanical:
``layers/3/self_attn/q_proj/kernel`` <-> ``model.layers.3.self_attn.q_proj.weight`` (transposed:
our kernels are [in, out], HF's [out, in]). Loading is all-or-nothing: a missing, unexpected or
misshapen tensor is an error that names it.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxcot.models.config import ModelConfig
from jaxcot.models.decoder import Decoder, abstract_model
from jaxcot.sharding import PARAM_RULES, make_mesh, param_spec, path_str

# Prefixes under which multimodal or wrapped checkpoints keep the language model.
_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
# Tensors HF folders may carry that have no place in our model.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class MissingTensor(KeyError, ValueError):
    """A tensor the model's config asks for is not in its weights file (a KeyError by name, a
    ValueError for the CLI's one-line errors); the message names the tensor and the file."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def hf_name(path: str) -> tuple[str, bool]:
    """Our '/'-path -> (HF tensor name, transpose?)."""
    parts = path.split("/")
    if parts[0] == "lm_head":
        return "lm_head.weight", True
    leaf = parts[-1]
    name = "model." + ".".join(parts[:-1] + (["weight"] if leaf in ("kernel", "embed_tokens", "weight") else [leaf]))
    if parts == ["embed_tokens"]:
        name = "model.embed_tokens.weight"
    return name, leaf == "kernel"


def param_paths(model: Decoder) -> dict[str, tuple[int, ...]]:
    """Our parameter paths (base weights only, no LoRA) -> shapes."""
    # LoRAParam subclasses Param: exclude adapters; `...` takes RNG state (LoRA dropout) aside.
    _, state, _ = nnx.split(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)), ...)
    return {path_str(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def param_bytes(model: Decoder) -> int:
    """Bytes of the model's parameters (LoRA factors included)."""
    _, params, _ = nnx.split(model, nnx.Param, ...)
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))


def _canonical(name: str) -> str:
    if name == "lm_head.weight":
        return name
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return "model." + name[len(prefix):]
    return name


def build_model(
    cfg: ModelConfig,
    get_tensor: Callable[[str], np.ndarray],
    available: Iterable[str],
    *,
    source: str,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    mesh: Mesh | None = None,
    rules=PARAM_RULES,
    ignore: Callable[[str], bool] = lambda n: False,
) -> Decoder:
    """Fill an abstract model from named HF-layout tensors, each placed by the sharding rules.

    get_tensor(canonical_name) -> array in HF layout; `available`: canonical names present.
    """
    mesh = mesh or make_mesh(devices=jax.local_devices()[:1])
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    available = set(available)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    wanted = []  # (parameter path, HF name, transpose, abstract leaf), all checked before any reading
    for path, leaf in leaves:
        p = path_str(path)
        name, transpose = hf_name(p)
        if name not in available:
            raise MissingTensor(f"{source}: missing tensor {name!r} (for parameter {p}, shape {tuple(leaf.shape)}); "
                                f"the weights do not match the model's config ({cfg.num_layers} layers, hidden size "
                                f"{cfg.hidden_size}): check that they come from the same model")
        wanted.append((p, name, transpose, leaf))

    def place(item, arr: np.ndarray):
        p, name, transpose, leaf = item
        arr = np.asarray(arr)
        if transpose:
            arr = arr.T
        if tuple(arr.shape) != tuple(leaf.shape):
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(arr.shape)}{' (transposed)' if transpose else ''}, "
                f"expected {tuple(leaf.shape)} for {p}"
            )
        if not np.isfinite(arr if arr.dtype.kind == "f" and arr.dtype.itemsize >= 2 and arr.dtype.isnative
                           else arr.astype(np.float32)).all():
            raise ValueError(f"{source}: tensor {name!r} holds NaN or inf")
        sharding = jax.sharding.NamedSharding(mesh, param_spec(p, tuple(leaf.shape), mesh, rules))
        return jax.device_put(jnp.asarray(arr, dtype=param_dtype), sharding)

    arrays = _read_ahead(get_tensor, [w[1] for w in wanted])
    params = jax.tree_util.tree_unflatten(treedef, [place(item, arr) for item, arr in zip(wanted, arrays)])
    used = {w[1] for w in wanted}
    unexpected = sorted(
        n for n in available - used
        if not n.endswith(_IGNORED_SUFFIXES) and not ignore(n)
        and not (cfg.tie_word_embeddings and n == "lm_head.weight")
    )
    if unexpected:
        raise ValueError(f"{source}: unexpected tensors not used by the {cfg.family} model: {unexpected[:10]}")
    return nnx.merge(graphdef, params, rest)


def _read_ahead(read: Callable[[str], np.ndarray], names: list[str], window: int | None = None):
    """`read(name)` for each name, in order, computed by a thread per core with at most `window`
    results waiting: dequantizing and reading release the GIL, so a model's tensors load in
    parallel while memory holds only a few of them beyond the model itself."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))
    window = window or 2 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="jaxcot-load") as pool:
        pending: collections.deque = collections.deque()
        for name in names:
            pending.append(pool.submit(read, name))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# -- safetensors folders -------------------------------------------------------------------------


def _safetensor_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.exists(os.path.join(path, f))]
        if missing:
            raise FileNotFoundError(f"{index}: shard files missing: {missing}")
        return [os.path.join(path, f) for f in files]
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")


def load_hf(path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, mesh: Mesh | None = None,
            rules=PARAM_RULES) -> Decoder:
    """Load a HF folder (config.json + safetensors, single or sharded) into a `Decoder`."""
    from safetensors import safe_open

    path = os.fspath(path)
    cfg = ModelConfig.from_hf(path)
    handles, where = [], {}
    for file in _safetensor_files(path):
        try:
            # numpy, not flax: the flax reader stages every tensor onto the device through a
            # jitted identity (one compiled program per distinct shape) only for it to be read
            # back to the host here; numpy reads the bytes once (bfloat16 through ml_dtypes)
            h = safe_open(file, framework="numpy")
        except Exception as e:  # safetensors raises its own error types for a broken header
            raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
        handles.append(h)
        for name in h.keys():
            where[_canonical(name)] = (h, name, file)

    def get(name):
        h, raw, file = where[name]
        try:
            return np.asarray(h.get_tensor(raw)).astype(np.float32, copy=False)
        except Exception as e:  # a truncated file fails when the tensor's bytes are read
            raise ValueError(f"{file}: cannot read tensor {raw!r} ({e}); is the file truncated?") from None

    vision = lambda n: any(k in n for k in ("vision_tower", "multi_modal_projector", "vision_model"))  # noqa: E731
    files = sorted({w[2] for w in where.values()})
    source = files[0] if len(files) == 1 else path  # the one weights file, or the folder of its shards
    return build_model(
        cfg, get, where.keys(), source=source, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules,
        ignore=vision,
    )


def hf_state_dict(model: Decoder, dtype=jnp.float32) -> dict[str, jax.Array]:
    """HF-named tensors of the model, LoRA merged into its kernels."""
    from jaxcot.models.layers import Linear

    out: dict[str, jax.Array] = {}
    merged = {}
    for path, module in nnx.iter_graph(model):
        if isinstance(module, Linear):
            if module.out_in:
                raise ValueError(f"{'/'.join(map(str, path))}: a model fused for decoding (fuse_for_decoding) has no "
                                 "HF layout; export the model it was made from")
            merged["/".join(map(str, path)) + "/kernel"] = module.merged_kernel()
    for p in param_paths(model):
        name, transpose = hf_name(p)
        if p in merged:
            arr = merged[p]
        else:
            arr = _get_path(model, p)
        arr = jnp.asarray(arr).astype(jnp.float32)
        out[name] = (arr.T if transpose else arr).astype(dtype)
    return out


def _get_path(model, path: str):
    obj = model
    for part in path.split("/"):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj[...]


def save_hf(model: Decoder, path: str | os.PathLike, *, tokenizer=None, dtype=jnp.float32) -> str:
    """Export to a HF folder (model.safetensors + config.json [+ tokenizer]) that transformers loads.

    Written to a temporary folder and renamed into place, so a crash leaves no half folder.
    """
    from safetensors.flax import save_file

    from jaxcot.io import atomic_folder

    path = os.fspath(path)
    with atomic_folder(path) as tmp:
        tensors = {k: jnp.asarray(jax.device_get(v)) for k, v in hf_state_dict(model, dtype).items()}
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        hf_cfg = model.config.to_hf_dict()
        hf_cfg["dtype"] = {jnp.float32: "float32", jnp.bfloat16: "bfloat16"}.get(dtype, "float32")
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_cfg, f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return path

