"""What made an output: a fingerprint of its settings, its inputs' contents and the jaxcot version,
kept beside it as `<output>.meta.json`.

Every stage claims its output before writing it (`claim`): an output made from other settings or
inputs is refused with a message naming what changed, or, when the caller allows it
(`jaxcot run`, or a command's `--overwrite`), discarded and made again. A finished output counts
as done only when its fingerprint matches the current one (`up_to_date`), so nothing is reused
because it merely exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
from typing import Any, Mapping

from jaxcot.io import DataError, atomic_write_json, output_lock

_CHUNK = 1 << 20


class StaleOutput(DataError):
    """An output exists but was made from other settings or inputs than the ones asked for."""


@functools.lru_cache(maxsize=None)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and contents, sorted);
    cached per (path, size, modification time) within the process."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        h = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, path).encode() + b"\0" + digest(full).encode())
        return h.hexdigest()
    st = os.stat(path)
    return _file_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxcot")
    except PackageNotFoundError:
        return "unknown"


def _plain(value: Any) -> Any:
    """A JSON-comparable form of settings (dataclasses, tuples and paths made plain)."""
    def plain(obj):
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=plain, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """settings: what the stage was told (plain JSON); inputs: {name: digest} of what it read."""

    settings: dict
    inputs: dict
    version: str

    @classmethod
    def of(cls, settings: Any, inputs: Mapping[str, str | os.PathLike] = ()) -> "Fingerprint":
        """The fingerprint of `settings` (a dataclass or mapping) and the files or folders `inputs`
        ({name: path}; their contents are hashed)."""
        return cls(_plain(settings), {k: digest(p) for k, p in dict(inputs).items()}, _version())

    def to_json(self) -> dict:
        return {"version": self.version, "settings": self.settings, "inputs": self.inputs}

    def differences(self, recorded: Mapping) -> list[str]:
        """What differs from a recorded fingerprint, one short phrase per setting or input."""
        out = []
        if recorded.get("version") != self.version:
            out.append(f"jaxcot {recorded.get('version')} -> {self.version}")
        out += [f"{k} changed" if _is_digest(a) or _is_digest(b) else f"{k}: {a!r} -> {b!r}"
                for k, a, b in _leaf_diff(recorded.get("settings", {}), self.settings)]
        old_inputs = recorded.get("inputs", {})
        out += [f"{k} changed" for k in sorted(set(old_inputs) | set(self.inputs))
                if old_inputs.get(k) != self.inputs.get(k)]
        return out


def _is_digest(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _leaf_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _leaf_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def meta_path(output: str | os.PathLike) -> str:
    return os.fspath(output).rstrip("/") + ".meta.json"


def recorded(output: str | os.PathLike) -> dict | None:
    """The fingerprint recorded beside `output`, or None."""
    try:
        with open(meta_path(output), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {}


def _exists(output: str) -> bool:
    return any(os.path.exists(p) for p in (output, output + ".partial"))


def discard(output: str | os.PathLike) -> None:
    """Remove an output (file or folder), its partial file and its fingerprint."""
    output = os.fspath(output)
    for p in (output, output + ".partial", meta_path(output)):
        if os.path.isdir(p):
            shutil.rmtree(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


def up_to_date(output: str | os.PathLike, fp: Fingerprint) -> bool:
    """Whether the fingerprint recorded beside `output` is `fp` (the output itself may still be
    partial: check completeness apart)."""
    rec = recorded(output)
    return rec is not None and not fp.differences(rec)


def claim(output: str | os.PathLike, fp: Fingerprint, *, replace: bool = False, say=None) -> None:
    """Make `output` (and its partial file) belong to `fp` before it is written or resumed.

    Up to date: nothing to do (a partial file resumes). Made by other settings or inputs, or with
    no record of what made it: with `replace`, discarded (and `say` is told why); else
    `StaleOutput` names what changed. Then the fingerprint is recorded beside it.
    """
    output = os.fspath(output)
    rec = recorded(output)
    if rec is not None and not fp.differences(rec):
        return
    if _exists(output):
        why = ("no record of the settings that made it" if rec is None
               else ", ".join(fp.differences(rec)) if rec else "its record is unreadable")
        if not replace:
            raise StaleOutput(f"{output} was made with other settings or inputs ({why}); "
                              "pass --overwrite to make it again, or choose another output")
        if say is not None:
            say(f"{output}: {why}; making it again")
        discard(output)
    atomic_write_json(meta_path(output), fp.to_json())


@contextlib.contextmanager
def claimed(output: str | os.PathLike, fp: Fingerprint, *, replace: bool = False, say=None):
    """Hold the output's lock (`jaxcot.io.output_lock`) and `claim` it for `fp` while writing it."""
    with output_lock(output):
        claim(output, fp, replace=replace, say=say)
        try:
            yield
        except BaseException:
            if not _exists(os.fspath(output)):  # nothing was written: leave no record of it either
                with contextlib.suppress(FileNotFoundError):
                    os.remove(meta_path(output))
            raise


def content_digest(obj: Any) -> str:
    """sha256 of an in-memory input (records, questions) in canonical JSON."""
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()


__all__ = ["Fingerprint", "StaleOutput", "claim", "claimed", "content_digest", "digest", "discard", "meta_path",
           "recorded", "up_to_date"]
