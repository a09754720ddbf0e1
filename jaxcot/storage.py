"""Output folders on remote storage (`gs://`, `s3://`, any fsspec URL), worked on through a local copy.

A stage writes through plain files: atomic renames, appends to a `.partial` file, `fcntl` locks,
Orbax's temporary folders. Object stores have none of these, so a remote output folder is
mirrored: `RemoteFolder.pull()` brings the folder's files into a local staging folder, the stage
works there, and `push()` makes the remote folder equal to the local one (new and changed files
uploaded, files the stage removed deleted). The run pushes after each stage and on the way out
(also on an error or SIGTERM), training after each checkpoint, so a machine that is lost (a
preempted TPU VM) resumes on another from the last push.

The remote folder is the truth: `pull()` makes the staging folder equal to it (a staging copy
left by a killed process is refreshed, never trusted). Locks and temporary files stay local.
One machine at a time may work on a remote folder: the local locks cannot see other machines.

gs:// needs `gcsfs` (`pip install jaxcot[gcs]`); other protocols need their fsspec package.
The staging folder is `$JAXCOT_STAGING_DIR/<hash of the URL>` (default under `~/.cache/jaxcot`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import os
import re
import shutil
from typing import Callable, Iterator, Sequence

from jaxcot.logs import get_logger

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Never mirrored: locks, atomic writers' temporary files, Orbax's unfinished checkpoints.
LOCAL_ONLY = ("*.lock", "*.tmp", "*.tmp/*", "*orbax-checkpoint-tmp*")


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL with a scheme other than file:// (gs://b/x, s3://b/x, memory://x, ...)."""
    m = _SCHEME.match(os.fspath(path))
    return bool(m) and m.group(1).lower() not in ("file", "local")


def join(base: str, *parts: str) -> str:
    """`os.path.join` for local paths, '/'-joined for URLs."""
    if not is_remote(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def staging_dir(url: str) -> str:
    """The local folder a remote folder is worked on in (see the module docstring)."""
    base = os.environ.get("JAXCOT_STAGING_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "jaxcot", "staging")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[:40]
    return os.path.join(base, f"{name}-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:16]}")


def _local_only(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pat) for pat in LOCAL_ONLY)


def _filesystem(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:  # fsspec names the package to install
        raise ImportError(f"{url}: {e}") from e


@dataclasses.dataclass
class RemoteFolder:
    """A remote folder and its local staging copy; `synced` holds each mirrored file's
    (size, mtime_ns) as of the last pull or push, relative path -> stat. With `prefix`, only
    the folder's own files whose names start with it are mirrored (one output and its siblings:
    x.jsonl, x.jsonl.partial, x.jsonl.meta.json)."""

    url: str
    local: str
    prefix: str = ""
    synced: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.fs, self.root = _filesystem(self.url)
        self.root = self.root.rstrip("/")

    def _remote_files(self) -> dict[str, int]:
        if not self.fs.exists(self.root):
            return {}
        if self.prefix:
            found = {info["name"]: info for info in self.fs.ls(self.root, detail=True)}
        else:
            found = self.fs.find(self.root, detail=True)
        out = {}
        for path, info in found.items():
            rel = path.rstrip("/")[len(self.root):].lstrip("/")
            if info.get("type", "file") == "file" and self._mirrors(rel):
                out[rel] = int(info.get("size") or 0)
        return out

    def _mirrors(self, rel: str) -> bool:
        if not rel or _local_only(rel):
            return False
        return not self.prefix or ("/" not in rel and rel.startswith(self.prefix))

    def _local_files(self) -> dict[str, tuple[int, int]]:
        out = {}
        for folder, _, names in os.walk(self.local):
            for name in names:
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, self.local).replace(os.sep, "/")
                if self._mirrors(rel) and os.path.isfile(full):
                    st = os.stat(full)
                    out[rel] = (st.st_size, st.st_mtime_ns)
        return out

    def pull(self) -> int:
        """Make the staging folder equal to the remote folder; returns the files downloaded."""
        remote = self._remote_files()
        local = self._local_files()
        for rel in set(local) - set(remote):
            os.unlink(os.path.join(self.local, rel))
        for rel in sorted(remote):  # every file: a staging copy left by another process is not trusted
            dest = os.path.join(self.local, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            self.fs.get_file(f"{self.root}/{rel}", dest + ".pull.tmp")
            os.replace(dest + ".pull.tmp", dest)
        os.makedirs(self.local, exist_ok=True)
        self.synced = self._local_files()
        return len(remote)

    def push(self) -> int:
        """Make the remote folder equal to the staging folder: upload what is new or changed
        since the last pull or push, delete what the stages removed; returns the files sent."""
        local = self._local_files()
        sent = 0
        for rel, stat in sorted(local.items()):
            if self.synced.get(rel) == stat:
                continue
            self.fs.makedirs(f"{self.root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(os.path.join(self.local, rel), f"{self.root}/{rel}")
            sent += 1
        for rel in set(self.synced) - set(local):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self.root}/{rel}")
        self.synced = local
        return sent


@contextlib.contextmanager
def local_folder(path: str) -> Iterator[tuple[str, RemoteFolder | None]]:
    """(a local folder to work in, its RemoteFolder or None). A local `path` is used as it is;
    a remote one is pulled into its staging folder first and pushed back on the way out, also
    when the block raises (so what a stopped stage finished is kept)."""
    path = os.fspath(path)
    if not is_remote(path):
        yield path, None
        return
    with _mirrored(RemoteFolder(path, staging_dir(path))) as remote:
        yield remote.local, remote


@contextlib.contextmanager
def local_file(path: str | os.PathLike | None) -> Iterator[str | None]:
    """A local path to write the output file `path` at: `path` itself when local (or None); for
    a URL, its place in a staging folder holding the file and its siblings (`<name>*`), pulled
    first and pushed back on the way out, also when the block raises."""
    path = None if path is None else os.fspath(path)
    if path is None or not is_remote(path):
        yield path
        return
    parent, name = path.rstrip("/").rsplit("/", 1)
    with _mirrored(RemoteFolder(parent, staging_dir(path), prefix=name)) as remote:
        yield os.path.join(remote.local, name)


@contextlib.contextmanager
def _mirrored(remote: RemoteFolder) -> Iterator[RemoteFolder]:
    os.makedirs(remote.local, exist_ok=True)
    log = get_logger("storage")
    log.info(f"{remote.url}: working in {remote.local}; {remote.pull()} files pulled")
    try:
        yield remote
    finally:
        log.info(f"{remote.url}: {remote.push()} files pushed")


@contextlib.contextmanager
def local_folders(paths: Sequence[str | None]) -> Iterator[tuple[list[str | None], Callable[[], None] | None]]:
    """`local_folder` for several paths at once (None stays None): yields (their local folders,
    a function pushing every remote one now, e.g. after a checkpoint; None when none is remote)."""
    with contextlib.ExitStack() as stack:
        local, remotes = [], []
        for p in paths:
            folder, remote = stack.enter_context(local_folder(p)) if p is not None else (None, None)
            local.append(folder)
            if remote is not None:
                remotes.append(remote)

        def push() -> None:
            for r in remotes:
                r.push()

        yield local, (push if remotes else None)


def remove_tree(path: str) -> None:
    """Remove a local folder or a remote one (tests and `--overwrite` of whole folders)."""
    if is_remote(path):
        fs, root = _filesystem(path)
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["LOCAL_ONLY", "RemoteFolder", "is_remote", "join", "local_file", "local_folder", "local_folders",
           "remove_tree", "staging_dir"]
