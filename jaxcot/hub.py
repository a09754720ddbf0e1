"""Whether the Hugging Face hub can be reached, asked once per process.

huggingface_hub and datasets retry a hub they cannot resolve for about 25 s, printing each retry,
before they fall back to their caches. Offline (a TPU VM without egress, a laptop on a train, this
project's CI), a hub id or dataset then costs half a minute of noise and ends in a traceback. So
before a hub lookup jaxcot asks once (DNS and a TCP connect to the endpoint, `timeout` s), and where
the hub is unreachable the libraries answer from their caches alone (their offline mode), and a
miss is one line naming what to do.
"""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlparse

_reachable: dict[str, bool] = {}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline_by_choice() -> bool:
    """HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE) is set true."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE",
                                                                                        "HF_DATASETS_OFFLINE"))


def reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (False when offline by choice)."""
    if offline_by_choice():
        return False
    url = endpoint()
    if url not in _reachable:
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                _reachable[url] = True
        except OSError:
            _reachable[url] = False
    return _reachable[url]


@contextlib.contextmanager
def cache_only():
    """Within: huggingface_hub and datasets read their caches and never open a connection (their
    offline mode; both read the flag when asked, and the environment at import)."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        env, hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def online_or_cache():
    """A context for one hub lookup: as it is when the hub is reachable, else `cache_only()`."""
    return contextlib.nullcontext() if reachable() else cache_only()


def unreachable_hint() -> str:
    """What an offline miss says: where the cache is and how to fill it."""
    import huggingface_hub.constants as hub_constants

    cache = hub_constants.HF_HUB_CACHE
    return (f"the hub ({endpoint()}) cannot be reached and the Hugging Face cache ({cache}) does not hold it; "
            "download it where there is network, or use a local path or an offline package")


__all__ = ["cache_only", "endpoint", "online_or_cache", "reachable", "unreachable_hint"]
