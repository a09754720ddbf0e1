"""Process-level settings for running on a CPU host.

`tune_host_allocator()` keeps glibc's malloc from handing XLA:CPU fresh pages on every call.

Why: XLA:CPU allocates each executable's temporary buffer per call, from its worker threads.
glibc serves a large request from a worker thread by a fresh `mmap` (a thread arena cannot
grow past 64 MB, and any request over the mmap threshold is mapped anyway) and unmaps it on
free, so every call page-faults its whole scratch space back in: on a 2M-parameter train step
many thousands of faults per call, a large share of a small model's step. With one arena, no
mmap and no trimming, the freed scratch stays in the heap and the next call reuses it
(`benchmarks/train.py` shows the effect; docs/performance.md has the figures).

The cost: memory freed by the process is kept for reuse rather than returned to the OS, so the
resident size stays at its peak. Set `JAXCOT_HOST_MALLOC=default` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_KEEP = 2**31 - 1  # largest int: never trim the heap top back to the OS

_done: bool | None = None


def tune_host_allocator() -> bool:
    """Set glibc malloc to one arena, no mmap'd chunks and no trimming; True when applied.

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
    ok = all(libc.mallopt(p, v) == 1 for p, v in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP)))
    _done = ok
    return ok


__all__ = ["tune_host_allocator"]
