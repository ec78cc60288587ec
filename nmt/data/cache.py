"""Arrow caches under ``data.cache_dir``: one directory per content key, written atomically.

A cache entry is a ``DatasetDict.save_to_disk`` directory plus a ``meta.json``. It is built in a scratch
directory next to its final place and renamed into place only when complete, so an interrupted run never
leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from nmt.errors import NmtError

log = logging.getLogger(__name__)
META_FILE = "meta.json"
PROGRESS_ROWS = 100_000  # a map over fewer rows takes seconds: no progress bar


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Enum):
        return obj.value
    return str(obj)


def content_key(*parts: Any) -> str:
    """A stable hex digest of the parts (JSON with sorted keys; dataclasses, enums and paths allowed)."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def cache_root(cache_dir: str) -> Path:
    """``data.cache_dir`` with ``~`` expanded, created if needed."""
    root = Path(cache_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NmtError(f"{root}: cannot create the data cache directory ({exc}); set data.cache_dir") from exc
    return root


def load_entry(path: Path) -> tuple[datasets.DatasetDict, dict] | None:
    """The cached splits and metadata at ``path``, or None when absent or unreadable (then rebuilt)."""
    if not (path / META_FILE).is_file():
        return None
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return datasets.load_from_disk(str(path)), meta
    except Exception as exc:  # any damage to a cache entry just means: rebuild it
        log.warning("%s: unreadable cache entry, rebuilding (%s)", path, exc)
        shutil.rmtree(path, ignore_errors=True)
        return None


def save_entry(path: Path, splits: datasets.DatasetDict, meta: dict) -> datasets.DatasetDict:
    """Write ``splits`` + ``meta`` to ``path`` atomically and return the splits memory-mapped from there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        empty = {name: 1 for name, ds in splits.items() if len(ds) == 0}  # zero shards would not load back
        splits.save_to_disk(str(tmp / "data"), num_shards=empty)
        (tmp / "data" / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            (tmp / "data").rename(path)
        except OSError:  # another process finished the same entry first: theirs is equally valid
            if not (path / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(path))


@contextlib.contextmanager
def scratch_dir(root: Path) -> Iterator[Path]:
    """A temporary directory under ``root`` for intermediate Arrow files, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=".work.", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def int_column(ds: datasets.Dataset, name: str) -> np.ndarray:
    """One integer column as a numpy array (no per-row Python objects)."""
    return ds.with_format("arrow")[name].to_numpy()


def keep_rows(ds: datasets.Dataset, keep: np.ndarray, indices_file: Path) -> datasets.Dataset:
    """The rows of ``ds`` where ``keep`` ([n_rows] bool) is true: ``ds`` itself when it keeps all, else a view
    through an indices mapping written to ``indices_file`` batch by batch.

    ``Dataset.select`` would turn the row numbers into a Python list first, some 50 bytes per row at its peak
    (half a gigabyte at ten million rows); here memory holds the mask alone.
    """
    if keep.all():
        return ds
    return ds.filter(
        lambda rows: keep[rows],
        with_indices=True,
        input_columns=[],  # the mask needs the row numbers only: no column is read
        batched=True,
        cache_file_name=str(indices_file),
        load_from_cache_file=False,
        new_fingerprint=content_key("keep_rows", str(indices_file), int(keep.sum())),
    )


def num_proc(n_rows: int, wanted: int) -> int | None:
    """Worker processes for ``datasets.map``: none for small inputs, where start-up costs more than it saves."""
    return wanted if wanted > 1 and n_rows >= 10_000 * wanted else None


@contextlib.contextmanager
def map_progress(n_rows: int, wanted: bool = True) -> Iterator[None]:
    """Show datasets' progress bar for a ``map`` over at least ``PROGRESS_ROWS`` rows (when ``wanted``).

    ``nmt.data.features`` turns datasets' bars off globally (a bar per small map or save is noise); a map over a
    large corpus takes minutes, and a silent one looks hung. ``HF_DATASETS_DISABLE_PROGRESS_BARS`` still wins.
    """
    show = (
        wanted
        and n_rows >= PROGRESS_ROWS
        and datasets.are_progress_bars_disabled()
        and datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is None
    )
    if not show:
        yield
        return
    datasets.enable_progress_bars()
    try:
        yield
    finally:
        datasets.disable_progress_bars()
