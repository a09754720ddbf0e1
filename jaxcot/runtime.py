"""Process-level settings for running on a CPU host.

`tune_host_allocator()` keeps glibc's malloc from handing XLA:CPU fresh pages on every call.

Why: XLA:CPU allocates each executable's temporary buffer per call, from its worker threads.
glibc serves a large request from a worker thread by a fresh `mmap` (a thread arena cannot
grow past 64 MB, and any request over the mmap threshold is mapped anyway) and unmaps it on
free, so every call page-faults its whole scratch space back in: on a 2M-parameter train step
many thousands of faults per call, a large share of a small model's step. With one arena, no
mmap below 32 MB and no trimming, the freed scratch stays in the heap and the next call reuses
it (`benchmarks/train.py` shows the effect; docs/performance.md has the figures).

Requests of 32 MB and more (glibc's largest mmap threshold) are still mapped, and unmapped when
freed. They are few per call, so their page faults cost little beside the work on them, and
keeping them out of the heap is what bounds its fragmentation: with every chunk in one heap, a
real model's train step (gigabytes of scratch) grew the process until the machine's memory ran
out once another process competed for the cores, the scratch landing in ever new places between
small long-lived chunks (docs/performance.md).

The cost: memory freed below 32 MB is kept for reuse rather than returned to the OS. Set
`JAXCOT_HOST_MALLOC=default` to leave malloc alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import signal
import threading
import time

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_KEEP = 2**31 - 1  # largest int: never trim the heap top back to the OS
_MMAP_FROM = 32 * 2**20  # glibc's largest allowed mmap threshold on 64-bit hosts

_done: bool | None = None


def tune_host_allocator() -> bool:
    """Set glibc malloc to one arena, mmap only from 32 MB and no trimming; True when applied.

    Call it before the first JAX computation (the CLI and benchmarks do it first thing). A no-op
    returning False off glibc (macOS, musl) or with JAXCOT_HOST_MALLOC=default. Idempotent.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("JAXCOT_HOST_MALLOC", "tuned").lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl and others have no mallopt knobs like these
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _MMAP_FROM), (_M_TRIM_THRESHOLD, _KEEP))
    ok = all(libc.mallopt(p, v) == 1 for p, v in settings)
    _done = ok
    return ok


def cache_dir() -> str | None:
    """Where compiled programs are kept between runs: `JAXCOT_CACHE_DIR`, else
    `$XDG_CACHE_HOME/jaxcot/xla` (default `~/.cache/jaxcot/xla`); None when
    `JAXCOT_COMPILATION_CACHE=0` turns the cache off."""
    if os.environ.get("JAXCOT_COMPILATION_CACHE", "1").lower() in ("0", "false", "off", "no"):
        return None
    if os.environ.get("JAXCOT_CACHE_DIR"):
        return os.path.join(os.environ["JAXCOT_CACHE_DIR"], "xla")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxcot", "xla")


def enable_compilation_cache(path: str | None = None, min_compile_seconds: float = 0.5) -> str | None:
    """Turn on JAX's persistent compilation cache in `path` (default `cache_dir()`), so that a
    command run again loads the programs it compiled before instead of compiling them; programs
    that compiled in under `min_compile_seconds` are not stored. Returns the folder, or None when
    the cache is off, or when the folder cannot be written (a warning says so, and the command
    goes on without it). Call it before the first compilation (the CLI does)."""
    import tempfile

    import jax

    path = path or cache_dir()
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a read-only folder (or file system) takes no programs
            pass
    except OSError as e:
        from jaxcot.logs import get_logger

        get_logger("jaxcot").warning(
            f"the compilation cache {path} cannot be written ({e.strerror or e}); going on without it "
            "(point JAXCOT_CACHE_DIR at a writable folder, or set JAXCOT_COMPILATION_CACHE=0)")
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def step_compiler_options() -> dict[str, str]:
    """XLA options for a long-running compiled step (`jax.jit(..., compiler_options=)`), by
    backend. On CPU: no YNNPACK library fusions. XLA:CPU builds each YNNPACK fusion's pipeline
    on a program's first call, a cost paid once per compiled program on top of loading it, and
    the steps after it ran no faster with them (docs/performance.md). Elsewhere: none.
    """
    import jax

    return {"xla_cpu_experimental_ynn_fusion_type": ""} if jax.default_backend() == "cpu" else {}


_IMPORTED = time.perf_counter()


def process_seconds() -> float:
    """Seconds since this process started (from /proc on Linux; elsewhere since this module was
    imported)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


@dataclasses.dataclass
class CompileStats:
    """What a piece of work compiled: `programs` the XLA programs it needed, `cached` how many of
    them came from the persistent compilation cache, `seconds` the time spent getting them (compiling
    or loading from the cache);
    `first_at`: the process's age when the first of them began (its start-up time)."""

    programs: int = 0
    cached: int = 0
    seconds: float = 0.0
    first_at: float | None = None

    def summary(self) -> str:
        start = f"start-up {self.first_at:.1f} s to the first compilation; " if self.first_at is not None else ""
        return (f"{start}{self.programs} compiled programs ({self.programs - self.cached} compiled, "
                f"{self.cached} from the compilation cache; {self.seconds:.1f} s in all)")


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


@contextlib.contextmanager
def count_compilations():
    """Yields a `CompileStats` that counts the programs compiled (or loaded from the persistent
    cache) while inside, through JAX's monitoring events."""
    from jax import monitoring

    stats = CompileStats()

    def on_duration(event: str, seconds: float, **kw) -> None:
        if event == _COMPILE_EVENT:
            if stats.first_at is None:
                stats.first_at = process_seconds() - seconds
            stats.programs += 1
            stats.seconds += seconds

    def on_event(event: str, **kw) -> None:
        if event == _CACHE_HIT_EVENT:
            stats.cached += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    try:
        yield stats
    finally:
        monitoring.unregister_event_duration_listener(on_duration)
        monitoring.unregister_event_listener(on_event)


class Interrupted(Exception):
    """A long command was stopped (SIGTERM) before it finished; what it finished is saved, and
    rerunning the same command resumes."""


@contextlib.contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises `Interrupted` in the main thread (as Ctrl-C raises
    KeyboardInterrupt), so outputs are flushed and closed on the way out. A no-op off the main
    thread. Training installs its own handler, which saves a checkpoint first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    received = []

    def stop(signum, frame):
        received.append(signum)
        raise Interrupted("stopped by SIGTERM")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
    if received:  # the raise was lost: Python drops exceptions raised inside gc callbacks (jax has one)
        raise Interrupted("stopped by SIGTERM (it arrived inside a callback, so only once the work was done)")


def device_memory_bytes(device) -> int | None:
    """What one device can hold: an accelerator's memory limit (`memory_stats()['bytes_limit']`),
    or for the host CPU the machine's physical memory; None when neither is known."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


__all__ = ["CompileStats", "Interrupted", "cache_dir", "count_compilations", "device_memory_bytes",
           "enable_compilation_cache", "process_seconds", "sigterm_raises", "step_compiler_options",
           "tune_host_allocator"]
