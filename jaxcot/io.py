"""File I/O every stage shares: atomic writes, JSONL with line-numbered errors, resumable output."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Write to a temp file in the same folder, fsync, rename into place on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | os.PathLike, *, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record); a malformed line or a missing field names file and line."""
    required = tuple(required)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise DataError(f"{path}:{lineno}: record has no field {missing[0]!r}")
            yield lineno, rec


def read_jsonl(path: str | os.PathLike, *, required: Iterable[str] = ()) -> list[dict]:
    return [rec for _, rec in iter_jsonl(path, required=required)]


class ResumableJsonl:
    """Append-only JSONL output keyed by a record id, for stages that resume after interruption.

    Records are appended to `<path>.partial` (each line flushed); `finish()` renames it to `path`.
    On restart, the ids already in the partial file are skipped. A torn last line (killed mid-write)
    is dropped and its record redone.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = os.fspath(path)
        self.partial = self.path + ".partial"
        self.key = key
        self.done: set = set()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        good = []
        if os.path.exists(self.partial):
            with open(self.partial, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break  # torn tail
                    good.append(line if line.endswith("\n") else line + "\n")
                    self.done.add(rec[key])
            with open(self.partial, "w", encoding="utf-8") as f:
                f.writelines(good)
        self._f = open(self.partial, "a", encoding="utf-8")

    @property
    def finished(self) -> bool:
        return os.path.exists(self.path) and not os.path.exists(self.partial)

    def write(self, rec: dict) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        self.done.add(rec[self.key])

    def finish(self) -> None:
        self._f.close()
        os.replace(self.partial, self.path)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
