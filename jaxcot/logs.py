"""Log lines: Python `logging` under the ``jaxcot`` logger.

Each line carries the time, the logger and the JAX process index; by default only process 0
speaks (a pod's 64 hosts would otherwise print every line 64 times). Lines go through
`tqdm.write`, so progress bars stay intact. `progress` makes every progress bar, shown only where
someone watches (stderr a terminal, or a notebook). A program that configures logging itself (a handler
on the ``jaxcot`` logger, or root handlers at INFO or below) keeps its own setup: `get_logger`
only installs jaxcot's handler where there is none. The command line always installs it.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s [%(name)s p%(process_index)d] %(message)s"


def process_index() -> int:
    """This process's index in a multi-process JAX run (0 before `jax.distributed` starts: asking
    JAX earlier would start its backend, after which `jax.distributed.initialize` fails)."""
    import jax

    return jax.process_index() if jax.distributed.is_initialized() else 0


class _ProcessFilter(logging.Filter):
    def __init__(self, all_processes: bool):
        super().__init__()
        self.all_processes = all_processes

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_index = process_index()
        return self.all_processes or record.process_index == 0


class _TqdmHandler(logging.StreamHandler):
    """Writes through `tqdm.write` so that a line does not break a progress bar; to `stream`, or
    to whatever sys.stderr is at the time (a notebook or a test may replace it)."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self.explicit = stream

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.explicit or sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def setup_logging(level: int | str = "INFO", *, all_processes: bool = False, stream=None) -> logging.Logger:
    """(Re)configure the ``jaxcot`` logger: one handler writing `_FORMAT` lines to `stream`
    (default stderr) at `level`, from process 0 only unless `all_processes`."""
    logger = logging.getLogger("jaxcot")
    for h in [h for h in logger.handlers if getattr(h, "_jaxcot", False)]:
        logger.removeHandler(h)
    handler = _TqdmHandler(stream)
    handler._jaxcot = True
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_ProcessFilter(all_processes))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def _root_shows_info() -> bool:
    """Whether the root logger was set up to show INFO lines. absl's first log call before its
    flags are parsed runs `logging.basicConfig()` (orbax logs while being imported), leaving a
    root handler at WARNING that is nobody's choice for jaxcot's lines."""
    root = logging.getLogger()
    return bool(root.handlers) and root.getEffectiveLevel() <= logging.INFO


def watched(stream=None) -> bool:
    """Whether a progress bar on `stream` (default stderr) has someone to watch it: a terminal, or
    a notebook (tqdm's widget; a notebook's stderr is no terminal)."""
    from tqdm.autonotebook import tqdm as chosen
    from tqdm.std import tqdm as console

    stream = sys.stderr if stream is None else stream
    return chosen is not console or bool(getattr(stream, "isatty", lambda: False)())


def progress(total: float | None = None, *, desc: str, unit: str = "it", initial: float = 0, enabled: bool = True,
             iterable=None, stream=None, **kw):
    """A tqdm bar (`tqdm.auto`: a widget in a notebook) on `stream` (default stderr), over `total`
    units or wrapping `iterable`; disabled unless `enabled` and `watched(stream)`, so that logs and
    pipes get no bar lines. Every jaxcot bar is made here; `kw` goes to tqdm (e.g. `bar_format`)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream,
                disable=not (enabled and watched(stream)), **kw)


def get_logger(name: str) -> logging.Logger:
    """The logger ``jaxcot.<name>``; installs jaxcot's handler if no logging is configured."""
    top = logging.getLogger("jaxcot")
    if not top.handlers and not _root_shows_info():
        setup_logging()
    return logging.getLogger(name if name == "jaxcot" or name.startswith("jaxcot.") else f"jaxcot.{name}")


def tensorboard_writer(logdir: str, **kw):
    """tensorboardX's `SummaryWriter(logdir, **kw)`. tensorboardX imports torch, when it can, only
    to accept torch tensors (jaxcot logs floats), a visible share of `jaxcot train`'s start-up
    (docs/performance.md). So where neither is loaded yet, it is imported with torch hidden (its
    `import torch` fails, which it catches); torch imports as usual afterwards."""
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
        try:
            import tensorboardX  # noqa: F401
        finally:
            if "torch" in sys.modules and sys.modules["torch"] is None:
                del sys.modules["torch"]
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir, **kw)


__all__ = ["get_logger", "process_index", "progress", "setup_logging", "tensorboard_writer", "watched"]
