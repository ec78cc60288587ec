"""The book's data sets (IMDB, CIFAR-10) from the Hugging Face hub, for online users.

Offline, ``datasets.load_dataset`` can retry for minutes; here the hub is probed first (:mod:`nmt.hub_probe`) and
an NmtError naming the offline default comes back at once. ``HF_HUB_OFFLINE=1`` skips the probe and reads the local cache; a local ``save_to_disk`` directory
works without any network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nmt.errors import NmtError
from nmt.hub_probe import hub_reachable, probe_address


def load_hub_dataset(name: str, offline_default: str) -> Any:
    """``datasets.load_dataset(name)`` (or ``load_from_disk`` for a directory) or a fast, clear NmtError.

    Returns the ``DatasetDict`` of all splits. ``offline_default`` is the override that works without a network,
    e.g. ``"data.source=rotten_tomatoes"``.
    """
    local = Path(name).is_dir()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if not local and not offline and not hub_reachable():
        host, port = probe_address()
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
