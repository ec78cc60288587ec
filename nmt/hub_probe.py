"""Is the Hugging Face hub reachable? One quick answer for every loader that may go online.

Offline, ``huggingface_hub`` and ``datasets`` can retry for minutes, and a silent host can hang a request that has
no timeout. Every loader therefore probes first: a TCP connect to where the first request would go (the HTTPS
proxy if one is set, else the hub endpoint), with a short timeout, in a thread because name resolution cannot be
given a timeout. The environment is read at call time: ``huggingface_hub`` reads it once, at import.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 4.0
DEFAULT_ENDPOINT = "https://huggingface.co"


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as the environment says now."""
    return _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` as the environment says now, else the public hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def probe_address() -> tuple[str, int]:
    """``(host, port)`` a hub request connects to first: the HTTPS proxy if one is set, else the endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or hub_endpoint())
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to :func:`probe_address` opens within ``timeout`` seconds."""
    host, port = probe_address()
    opened = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.set()
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return opened.is_set()
