"""The book's data sets (IMDB, CIFAR-10) from the Hugging Face hub, for online users.

Offline, ``datasets.load_dataset`` can retry for minutes; here the hub is probed first (a TCP connect with a short
timeout, in a thread because name resolution cannot be timed out) and an NmtError naming the offline default comes
back at once. ``HF_HUB_OFFLINE=1`` skips the probe and reads the local cache; a local ``save_to_disk`` directory
works without any network.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nmt.errors import NmtError

PROBE_TIMEOUT_S = 4.0


def _probe_address() -> tuple[str, int]:
    """The host the download would connect to first: the HTTPS proxy if one is set, else the hub endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the hub (or the proxy) opens within ``timeout`` seconds."""
    host, port = _probe_address()
    ok = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def load_hub_dataset(name: str, offline_default: str) -> Any:
    """``datasets.load_dataset(name)`` (or ``load_from_disk`` for a directory) or a fast, clear NmtError.

    Returns the ``DatasetDict`` of all splits. ``offline_default`` is the override that works without a network,
    e.g. ``"data.source=rotten_tomatoes"``.
    """
    local = Path(name).is_dir()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if not local and not offline and not hub_reachable():
        host, port = _probe_address()
        raise NmtError(
            f"the data set {name!r} comes from the Hugging Face hub, but {host}:{port} cannot be reached. "
            f"Use the offline default ({offline_default}), or set HF_HUB_OFFLINE=1 if {name!r} is in your HF cache"
        )
    import datasets  # heavy; only the online options need it

    if local:
        try:
            return datasets.load_from_disk(name)
        except Exception as exc:  # datasets raises several types for a bad directory
            raise NmtError(f"{name}: not a datasets save_to_disk directory ({exc})") from exc
    try:
        return datasets.load_dataset(name)
    except Exception as exc:  # network, cache and hub errors come in many types; say which set and what to do
        raise NmtError(
            f"could not load {name!r} from the Hugging Face hub ({exc}); offline: use {offline_default}"
        ) from exc
