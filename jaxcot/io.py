"""File I/O every stage shares: atomic writes, JSONL with line-numbered errors, resumable output."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import stat
import tempfile
from typing import Any, Iterable, Iterator, Sequence

# A write that fails for want of room (disk or quota full) or a read-only file system: the CLI's
# one-line errors name the file (`jaxcot.cli`).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


class LockError(RuntimeError):
    """Another live process is writing the same output."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _lock_refused(lock: str, path: str, what: str) -> "LockError":
    return LockError(f"{lock} {what}, not a lock jaxcot made for {path}: a lock is never followed or "
                     "overwritten; remove it (or choose another output) and rerun")


def _open_lock(lock: str, path: str) -> int | None:
    """A descriptor of the lock file `lock`: created here, or an existing regular file with one link
    (never a symbolic link, which is not followed); None when it vanished meanwhile (try again)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        pass
    if os.path.islink(lock):
        raise _lock_refused(lock, path, "is a symbolic link")
    try:
        fd = os.open(lock, flags | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _lock_refused(lock, path, f"cannot be opened as a lock file ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > 64:
        os.close(fd)
        raise _lock_refused(lock, path, "is not a small plain file of its own (a hard link, a device, a pipe)")
    return fd


@contextlib.contextmanager
def output_lock(path: str | os.PathLike):
    """Hold an advisory lock (`fcntl.flock`) on `<path>.lock` while writing `path`.

    A second writer gets `LockError` naming the holder's PID. The kernel releases a lock when its
    process dies, so a lock left by a killed process is taken over; the lock file is removed on
    release, and a holder checks it still locks the file at that path (not one just removed).
    A lock file is never followed when it is a symbolic link, and one that does not hold a PID (or
    nothing) was not made by jaxcot: both are refused, untouched.
    """
    import fcntl

    path = os.fspath(path)
    lock = path.rstrip("/") + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    while True:
        if (fd := _open_lock(lock, path)) is None:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockError(f"{path} is being written by process {holder} (lock {lock}); "
                            "wait for it to finish or stop it") from None
        try:
            st = os.lstat(lock)
            same = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by the previous holder between our open and lock
    held = os.pread(fd, 64, 0)
    if held.strip() and not held.strip().isdigit():  # not a PID: a file jaxcot did not write
        os.close(fd)
        raise _lock_refused(lock, path, "holds something other than a process id")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Write to a temp file in the same folder, fsync, rename into place on success. The file
    gets the permissions the umask gives a new file (mkstemp's own are 0600). Temp files of the
    same path left by a killed writer are removed first (writers of one output hold its lock)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(glob.escape(os.path.abspath(path)) + ".*.tmp"):  # left by a writer that was killed
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS and e.filename is None:
            raise OSError(e.errno, e.strerror, path) from e  # say which output could not be written
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """A folder written whole or not at all: yields a temporary sibling (`<path>.tmp`, emptied
    first), which replaces `path` when the block ends without error and is removed otherwise."""
    import shutil

    path = os.fspath(path)
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


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


def is_complete(path: str | os.PathLike) -> bool:
    """Whether a resumable output is finished: the file exists and no `<path>.partial` beside it."""
    path = os.fspath(path)
    return os.path.exists(path) and not os.path.exists(path + ".partial")


def refuse_same_file(out: str | os.PathLike, **inputs: str | os.PathLike | None) -> None:
    """Raise DataError when the output path names one of the inputs ({flag: path})."""
    real = os.path.realpath(os.fspath(out))
    for flag, path in inputs.items():
        if path is not None and os.path.realpath(os.fspath(path)) == real:
            raise DataError(f"the output {os.fspath(out)} is the {flag} file: writing it would destroy the input; "
                            "choose another output")


class ResumableJsonl:
    """One JSONL record per expected id, written so that an interrupted stage resumes.

        with ResumableJsonl("traces.jsonl", ids=[it["id"] for it in items]) as out:
            for item in items:
                if item["id"] in out.pending:
                    out.write(make_record(item))

    Records are appended to `<path>.partial`, each line flushed. On entry the ids already there
    are `done` (a torn last line, from a kill mid-write, is dropped and its record redone) and the
    rest are `pending`; a finished `path` counts as all done. On a clean exit every expected id
    must have been written exactly once; then `path` is written atomically with the records in
    the order of `ids`, whatever order the work wrote them in (a stage's batching, a resume: what
    the next stage reads must not depend on them), and the partial file removed. An exception
    leaves the partial file for the next run. A finished file or partial file holding ids that
    were not asked for is refused (DataError), never merged.
    """

    def __init__(self, path: str | os.PathLike, ids: Iterable, *, key: str = "id"):
        self.path = os.fspath(path)
        self.partial = self.path + ".partial"
        self.key = key
        self.ids = list(ids)
        expected = set(self.ids)
        if len(expected) != len(self.ids):
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise DataError(f"{self.path}: the input holds id {dup!r} more than once")
        self.done: set = set()
        self._f = None

    @property
    def pending(self) -> list:
        """Expected ids not written yet, in input order."""
        return [i for i in self.ids if i not in self.done]

    def _check_ids(self, found: Sequence, where: str) -> None:
        expected = set(self.ids)
        foreign = [i for i in found if i not in expected]
        if foreign:
            raise DataError(f"{where} holds {len(foreign)} record(s) whose ids are not in this input "
                            f"(e.g. {foreign[0]!r}): it was written from other data or settings; "
                            "move it away or overwrite it")
        seen: set = set()
        for i in found:
            if i in seen:
                raise DataError(f"{where} holds id {i!r} twice")
            seen.add(i)

    def __enter__(self) -> "ResumableJsonl":
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if is_complete(self.path):
            found = [rec[self.key] for _, rec in iter_jsonl(self.path, required=(self.key,))]
            self._check_ids(found, self.path)
            if len(found) != len(self.ids):
                raise DataError(f"{self.path} holds {len(found)} of the {len(self.ids)} records asked for; "
                                "move it away or overwrite it")
            self.done = set(found)
            return self
        good, found = [], []
        if os.path.exists(self.partial):
            with open(self.partial, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break  # torn tail
                    if not isinstance(rec, dict) or self.key not in rec:
                        raise DataError(f"{self.partial}:{lineno}: expected a JSON object with an {self.key!r} "
                                        f"field, got {line.strip()[:60]!r}; the partial output is damaged: "
                                        "remove it to start this output over")
                    good.append(line if line.endswith("\n") else line + "\n")
                    found.append(rec[self.key])
            self._check_ids(found, self.partial)
            with open(self.partial, "w", encoding="utf-8") as f:
                f.writelines(good)
        self.done = set(found)
        self._f = open(self.partial, "a", encoding="utf-8")
        return self

    def write(self, rec: dict) -> None:
        rid = rec[self.key]
        if rid in self.done:
            raise DataError(f"{self.partial}: record {rid!r} written twice")
        if self._f is None:
            raise RuntimeError(f"{self.path}: write() outside the `with` block or after the output was complete")
        try:
            self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._f.flush()
        except OSError as e:
            if e.errno in WRITE_ERRNOS and e.filename is None:
                raise OSError(e.errno, e.strerror, self.partial) from e
            raise
        self.done.add(rid)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._f is None:
            return
        f, self._f = self._f, None
        try:
            f.close()
        except OSError as e:
            if exc_type is not None:  # the error that ended the block (a full disk, say) is the one to tell
                return
            if e.errno in WRITE_ERRNOS and e.filename is None:
                raise OSError(e.errno, e.strerror, self.partial) from e
            raise
        if exc_type is not None:
            return
        missing = self.pending
        if missing:
            raise DataError(f"{self.path}: {len(missing)} of {len(self.ids)} records were not written "
                            f"(e.g. {missing[0]!r}); the partial file is kept, rerun to finish")
        where = {}  # id -> (offset, length) of its line in the partial file
        with open(self.partial, "rb") as f:
            offset = 0
            for line in f:
                where[json.loads(line)[self.key]] = (offset, len(line))
                offset += len(line)
        if list(where) == self.ids:  # written in order already
            os.replace(self.partial, self.path)
            return
        with open(self.partial, "rb") as f:
            with atomic_open(self.path, "wb") as out:
                for rid in self.ids:
                    f.seek(where[rid][0])
                    out.write(f.read(where[rid][1]))
        os.unlink(self.partial)
