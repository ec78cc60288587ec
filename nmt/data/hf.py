"""Hugging Face datasets: a hub name (online, or HF_HUB_OFFLINE=1 with a cached copy) or a local
``save_to_disk`` directory. Fields are picked by dotted paths into each record (``translation.en``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import huggingface_hub

from nmt.config import DataConfig
from nmt.data.cache import cache_root
from nmt.data.features import CORPUS_FEATURES, SPLITS, empty_split
from nmt.errors import NmtError
from nmt.hub_probe import hub_reachable, probe_address

OFFLINE_HINT = (
    "without internet use data.source=bible (the default), data.source=text (local files), or "
    "data.hf.name=/path/to/a/save_to_disk/directory; a hub dataset downloaded before can be used "
    "with HF_HUB_OFFLINE=1"
)


def _local_dir(name: str) -> Path | None:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:  # hub names are `name` or `owner/name`
        raise NmtError(
            f"{path}: directory not found (data.hf.name is neither a save_to_disk directory nor a hub name)"
        )
    return None


def _check_hub_reachable(name: str) -> None:
    """Fail in seconds, not after minutes of retries, when the hub cannot be reached."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return  # offline mode fails fast by itself
    if not hub_reachable():
        host, port = probe_address()
        raise NmtError(f"data.hf.name={name!r}: cannot reach {host}:{port}; {OFFLINE_HINT}")


def _load(cfg: DataConfig) -> tuple[str, datasets.DatasetDict | datasets.Dataset]:
    name = cfg.hf.name
    if not name:
        raise NmtError("data.source=hf needs data.hf.name (a hub dataset name or a save_to_disk directory)")
    local = _local_dir(name)
    if local is not None:
        try:
            return str(local), datasets.load_from_disk(str(local))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise NmtError(f"{local}: not a datasets save_to_disk directory ({exc})") from exc
    _check_hub_reachable(name)
    try:
        loaded = datasets.load_dataset(name, cfg.hf.config, cache_dir=str(cache_root(cfg.cache_dir) / "hf"))
    except (ConnectionError, OSError, TimeoutError) as exc:
        raise NmtError(f"data.hf.name={name!r}: could not load from the hub ({exc}); {OFFLINE_HINT}") from exc
    except (datasets.exceptions.DatasetNotFoundError, ValueError) as exc:
        raise NmtError(f"data.hf.name={name!r} data.hf.config={cfg.hf.config!r}: {exc}") from exc
    return name, loaded


def _get(values: list[Any], path: list[str]) -> list[Any]:
    for key in path:
        values = [v.get(key) if isinstance(v, dict) else None for v in values]
    return values


def _extract(batch: dict[str, list], indices: list[int], src: str, tgt: str) -> dict[str, list]:
    src_parts, tgt_parts = src.split("."), tgt.split(".")
    ids = batch.get("id", indices)
    return {
        "id": [str(i) for i in ids],
        "src": ["" if s is None else str(s) for s in _get(batch[src_parts[0]], src_parts[1:])],
        "tgt": ["" if t is None else str(t) for t in _get(batch[tgt_parts[0]], tgt_parts[1:])],
        "refs": [[] for _ in indices],
    }


def _check_field(origin: str, split: str, ds: datasets.Dataset, field: str, key: str) -> None:
    parts = field.split(".")
    first = ds[0] if len(ds) else None
    if parts[0] not in ds.column_names or (
        first is not None and _get([first[parts[0]]], parts[1:]) == [None]
    ):
        sample = {
            k: (sorted(v) if isinstance(v, dict) else type(v).__name__) for k, v in (first or {}).items()
        }
        raise NmtError(
            f"{origin}: field {field!r} (data.hf.{key}) not found in split {split!r}; "
            f"columns: {ds.column_names}, first record's keys: {sample}"
        )


def fields(cfg: DataConfig) -> tuple[str, str]:
    """Dotted paths of the source and target text (default ``translation.<lang>``)."""
    return (
        cfg.hf.src_field or f"translation.{cfg.src_lang}",
        cfg.hf.tgt_field or f"translation.{cfg.tgt_lang}",
    )


def fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What determines the corpus: name, config, splits, fields, and for a local directory its files' stats."""
    key: dict[str, Any] = {"hf": cfg.hf, "fields": fields(cfg)}
    local = _local_dir(cfg.hf.name) if cfg.hf.name else None
    if local is not None:
        key["files"] = {
            str(p.relative_to(local)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(local.rglob("*"))
            if p.is_file()
        }
    return key


def build(cfg: DataConfig, work: Path) -> datasets.DatasetDict:
    """Raw train/dev/test splits mapped to the corpus columns; a missing dev or test split is empty."""
    src_field, tgt_field = fields(cfg)
    origin, loaded = _load(cfg)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({cfg.hf.train_split: loaded})
    names = {"train": cfg.hf.train_split, "dev": cfg.hf.dev_split, "test": cfg.hf.test_split}
    if names["train"] not in loaded:
        raise NmtError(
            f"{origin}: no split {names['train']!r} (data.hf.train_split); it has {sorted(loaded)}"
        )
    splits = {}
    for split in SPLITS:
        if names[split] not in loaded:
            splits[split] = empty_split()
            continue
        ds = loaded[names[split]]
        _check_field(origin, names[split], ds, src_field, "src_field")
        _check_field(origin, names[split], ds, tgt_field, "tgt_field")
        splits[split] = ds.map(
            _extract,
            batched=True,
            with_indices=True,
            fn_kwargs={"src": src_field, "tgt": tgt_field},
            remove_columns=ds.column_names,
            features=CORPUS_FEATURES,
            cache_file_name=str(work / f"hf-{split}.arrow"),  # never write into the user's dataset directory
            desc=f"read {split}",
        )
    return datasets.DatasetDict(splits)
