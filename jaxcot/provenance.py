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

from jaxcot.io import DataError, atomic_open, atomic_write_json, output_lock

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


def settings_differences(fp: Fingerprint, recorded: Mapping) -> list[str]:
    """What differs from a recorded fingerprint in its settings alone: not the jaxcot version, the
    inputs' contents, or the digests of in-memory inputs its settings hold (`content_digest`)."""
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in _leaf_diff(recorded.get("settings", {}), fp.settings)
            if not (_is_digest(a) or _is_digest(b))]


def _is_digest(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _leaf_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _leaf_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def meta_path(output: str | os.PathLike) -> str:
    return os.fspath(output).rstrip("/") + ".meta.json"


def recorded(output: str | os.PathLike) -> dict | None:
    """The fingerprint recorded beside `output`, or None; {} when the record is unreadable (not
    JSON, or JSON but not an object)."""
    try:
        with open(meta_path(output), encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _exists(output: str) -> bool:
    return any(os.path.exists(p) for p in (output, output + ".partial"))


def discard(output: str | os.PathLike) -> None:
    """Remove an output (file or folder), its partial file and its fingerprint."""
    output = os.fspath(output)
    for p in (output, output + ".partial", meta_path(output), meta_path(output + ".partial")):
        if os.path.isdir(p):
            shutil.rmtree(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


def _complete(output: str) -> bool:
    return os.path.exists(output) and not os.path.exists(output + ".partial")


def _jsonl_records(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def content(output: str | os.PathLike) -> dict:
    """What a finished output holds, as its meta records it: a file's byte count and sha256 (and a
    JSONL file's record count); a folder's, per file (a model folder: its weights, config, ...)."""
    output = os.fspath(output)
    if os.path.isdir(output):
        return {"files": {os.path.relpath(os.path.join(root, name), output): content(os.path.join(root, name))
                          for root, _, names in os.walk(output) for name in names}}
    out = {"bytes": os.path.getsize(output), "sha256": digest(output)}
    if output.endswith(".jsonl"):
        out["records"] = _jsonl_records(output)
    return out


def content_differences(output: str | os.PathLike, rec: Mapping | None = None) -> list[str]:
    """How a finished output differs from the content recorded in its meta (`rec`, read when not
    given): [] when it is the same, or when the output is not finished (a partial one resumes)."""
    output = os.fspath(output)
    if not _complete(output):
        return []
    rec = recorded(output) if rec is None else rec
    want = (rec or {}).get("content")
    if not isinstance(want, dict):
        return ["no record of its content"]
    now = content(output)
    if "files" in want or "files" in now:
        old, new = want.get("files") or {}, now.get("files") or {}
        return ([f"{k} missing" for k in sorted(set(old) - set(new))]
                + [f"{k} was not there" for k in sorted(set(new) - set(old))]
                + [f"{k} changed" for k in sorted(set(old) & set(new)) if old[k] != new[k]])
    for key in ("records", "bytes"):
        if want.get(key) != now.get(key):
            return [f"{want.get(key)} {key} recorded when it was made, {now.get(key)} now"]
    return [] if want.get("sha256") == now["sha256"] else ["its bytes changed since it was made"]


def record_content(output: str | os.PathLike) -> None:
    """Add a finished output's `content` to its meta (done when the output is complete, so that a
    later change to its bytes, or a lost file, makes it not done)."""
    output = os.fspath(output)
    rec = recorded(output)
    if rec and _complete(output):
        atomic_write_json(meta_path(output), {**rec, "content": content(output)})


def up_to_date(output: str | os.PathLike, fp: Fingerprint) -> bool:
    """Whether the fingerprint recorded beside `output` is `fp` and, when the output is finished,
    it still holds what its meta recorded when it was (`content_differences`; a partial output
    resumes: check completeness apart)."""
    rec = recorded(output)
    return rec is not None and not fp.differences(rec) and not content_differences(output, rec)


ALWAYS = "always"  # `replace=ALWAYS`: make the output again even when it is up to date (a command's --overwrite)


def _ident(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _size(path: str) -> int | None:
    return None if (ident := _ident(path)) is None else ident[2]


def _put(path: str, data: bytes | None) -> None:
    """`path` holding `data` again (removed when None)."""
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    else:
        with atomic_open(path, "wb") as f:
            f.write(data)


def _empty_partial(output: str) -> None:
    """`<output>.partial` made empty (a stale one, left by a killed writer, removed first): it marks
    the finished file beside it as not yet replaced, and is where a resumable writer starts."""
    partial = output + ".partial"
    with contextlib.suppress(FileNotFoundError):
        os.remove(partial)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))


def _replacing(output: str) -> bool:
    """Whether a replacement of the finished file `output` is under way: its partial file and the
    partial's own record (`<output>.partial.meta.json`, the settings the new file is made with)."""
    return all(os.path.exists(p) for p in (output, output + ".partial", meta_path(output + ".partial"))) \
        and os.path.isfile(output)


def _drop_replacement(output: str) -> None:
    """A replacement never finished: its partial file and its record go, the finished file stays."""
    for p in (output + ".partial", meta_path(output + ".partial")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def claim(output: str | os.PathLike, fp: Fingerprint, *, replace: bool | str = False, say=None) -> None:
    """Make `output` (and its partial file) belong to `fp` before it is written or resumed; hold
    its lock meanwhile (`claimed` does).

    Up to date: nothing to do (a partial file resumes). Made by other settings or inputs, or with
    no record of what made it (or, with `replace=ALWAYS`, whatever made it): without `replace`,
    `StaleOutput` names what changed; with it (`say` is told why) a finished file and its record
    stay as they are until the replacement is complete -- an empty `<output>.partial` beside it
    marks it as not done, the new settings are recorded as the partial's (`<output>.partial.meta.json`),
    and `claimed` moves that record over the old one once the writer's rename has put the new file
    in place -- while a stale partial file, or a folder, is discarded and the record written at once.

    A replacement that was interrupted resumes when claimed again with its settings; claimed with the
    settings the finished file was made with, it is dropped (the finished file is what was asked for).
    """
    output = os.fspath(output)
    if _replacing(output):
        pending = recorded(output + ".partial")
        if pending and not fp.differences(pending) and replace != ALWAYS:
            return  # an interrupted replacement resumes
        if say is not None:
            say(f"{output}: dropping an unfinished replacement made with other settings")
        _drop_replacement(output)
    elif os.path.exists(meta_path(output + ".partial")):  # the record of a replacement that ended or was undone
        os.remove(meta_path(output + ".partial"))
    rec = recorded(output)
    changed = content_differences(output, rec) if rec else []  # a finished output's bytes, against its record
    if rec is not None and not fp.differences(rec) and not changed and not (replace == ALWAYS and _exists(output)):
        return
    if _exists(output):
        why = (", ".join(changed) if rec and changed and not fp.differences(rec)
               else "made again (--overwrite)" if rec is not None and not fp.differences(rec)
               else "no record of the settings that made it" if rec is None
               else ", ".join(fp.differences(rec)) if rec else f"its record {meta_path(output)} is unreadable")
        if not replace:
            raise StaleOutput(f"{output} was made with other settings or inputs ({why}); "
                              "pass --overwrite to make it again, or choose another output")
        if say is not None:
            say(f"{output}: {why}; making it again")
        if os.path.isfile(output):
            _empty_partial(output)
            atomic_write_json(meta_path(output + ".partial"), fp.to_json())
            return
        discard(output)
    atomic_write_json(meta_path(output), fp.to_json())


@contextlib.contextmanager
def claimed(output: str | os.PathLike, fp: Fingerprint, *, replace: bool | str = False, say=None):
    """Hold the output's lock (`jaxcot.io.output_lock`) and `claim` it for `fp` while writing it.

    Everything is checked (the lock, then what is there) before anything is touched. A block that
    fails before writing anything (its output unchanged, its partial file absent or empty) leaves
    what was there as it was: the records restored, a partial file it made removed. When the block
    replaced a finished file, the partial's record becomes the file's and the empty partial file
    that marked the old one goes."""
    output = os.fspath(output)
    partial, pending = output + ".partial", meta_path(output + ".partial")
    with output_lock(output):
        before = _ident(output)
        saved = {p: _read_bytes(p) for p in (meta_path(output), pending)}
        had_partial = os.path.exists(partial)
        claim(output, fp, replace=replace, say=say)
        try:
            yield
        except BaseException:
            if _ident(output) in (before, None) and _size(partial) in (None, 0):  # nothing written: undo
                if not had_partial:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(partial)
                for p, data in saved.items():
                    _put(p, data if os.path.exists(output) or os.path.exists(partial) else None)
            raise
        if _ident(output) != before and os.path.isfile(output):
            if os.path.exists(pending):
                os.replace(pending, meta_path(output))
            if _size(partial) == 0:
                os.remove(partial)  # the marker of the file just replaced
        record_content(output)


def content_digest(obj: Any) -> str:
    """sha256 of an in-memory input (records, questions) in canonical JSON."""
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()


__all__ = ["ALWAYS", "Fingerprint", "StaleOutput", "claim", "claimed", "content", "content_differences",
           "content_digest", "digest", "discard", "meta_path", "record_content", "recorded", "settings_differences",
           "up_to_date"]
