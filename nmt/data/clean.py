"""Cleaning: normalisation (:func:`nmt.text_norm.normalise`, the same a translator applies to its input) and
filters whose every drop is counted by reason.

Normalisation and the ``empty`` filter apply to every split. The length, ratio and duplicate filters apply
to the training split only: dev and test stay as the corpus defines them, so scores remain comparable with
other systems evaluated on the same sets (a long test sentence is still a valid test).
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from nmt.config import CleanConfig
from nmt.data.cache import int_column, keep_rows, num_proc
from nmt.text_norm import normalise

REASONS = ("empty", "too_long", "ratio", "duplicate")  # code i+1 in the `_drop` column; 0 keeps the pair
_EMPTY, _TOO_LONG, _RATIO, _DUPLICATE = range(1, 5)

_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"))  # controls, zero-width/format marks, spaces


def _visible(text: str) -> bool:
    """Whether ``text`` shows anything: a side made only of controls or zero-width marks counts as empty."""
    return any(unicodedata.category(ch) not in _INVISIBLE for ch in text)


def _drop_code(src: str, tgt: str, max_words: int, max_ratio: float) -> int:
    if not _visible(src) or not _visible(tgt):
        return _EMPTY
    n_src, n_tgt = len(src.split(" ")), len(tgt.split(" "))  # normalised: single spaces
    if max_words > 0 and max(n_src, n_tgt) > max_words:
        return _TOO_LONG
    if max_ratio > 0 and max(n_src, n_tgt) > max_ratio * min(n_src, n_tgt):
        return _RATIO
    return 0


def _pair_hash(src: str, tgt: str) -> int:
    digest = hashlib.blake2b(f"{src}\t{tgt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)  # fits Arrow's int64


def _clean_batch(
    batch: dict[str, list], nfc: bool, max_words: int, max_ratio: float, dedupe: bool
) -> dict[str, list]:
    src = [normalise(s, nfc) for s in batch["src"]]
    tgt = [normalise(t, nfc) for t in batch["tgt"]]
    out: dict[str, Any] = {
        "src": src,
        "tgt": tgt,
        "refs": [[normalise(r, nfc) for r in refs] for refs in batch["refs"]],
        "_drop": [_drop_code(s, t, max_words, max_ratio) for s, t in zip(src, tgt)],
    }
    if dedupe:
        out["_hash"] = [_pair_hash(s, t) for s, t in zip(src, tgt)]
    return out


def clean_split(
    ds: datasets.Dataset, cfg: CleanConfig, filter_pairs: bool, work: Path, name: str, procs: int = 1
) -> tuple[datasets.Dataset, dict]:
    """Normalise one split and drop bad pairs; ``filter_pairs`` enables the length/ratio/dedupe filters.

    Returns the cleaned split and ``{"kept": n, "dropped": {reason: n}}`` (every reason listed, zeros too).
    """
    dedupe = filter_pairs and cfg.dedupe
    ds = ds.map(
        _clean_batch,
        batched=True,
        fn_kwargs={
            "nfc": cfg.nfc,
            "max_words": cfg.max_words if filter_pairs else 0,
            "max_ratio": cfg.max_ratio if filter_pairs else 0.0,
            "dedupe": dedupe,
        },
        num_proc=num_proc(len(ds), procs),
        cache_file_name=str(work / f"clean-{name}.arrow"),
        desc=f"clean {name}",
    )
    codes = int_column(ds, "_drop").astype(np.int64) if len(ds) else np.zeros(0, np.int64)
    if dedupe and len(ds):
        candidates = np.flatnonzero(codes == 0)
        _, first = np.unique(int_column(ds, "_hash")[candidates], return_index=True)
        repeated = np.ones(len(candidates), dtype=bool)
        repeated[first] = False  # the first occurrence of each pair stays
        codes[candidates[repeated]] = _DUPLICATE
    counts = np.bincount(codes, minlength=len(REASONS) + 1)
    ds = keep_rows(ds, codes == 0, work / f"kept-{name}.arrow")
    ds = ds.remove_columns([c for c in ("_drop", "_hash") if c in ds.column_names])
    report = {"kept": int(counts[0]), "dropped": {r: int(counts[i + 1]) for i, r in enumerate(REASONS)}}
    return ds, report


def clean_corpus(
    splits: datasets.DatasetDict, cfg: CleanConfig, work: Path, procs: int = 1
) -> tuple[datasets.DatasetDict, dict]:
    """Clean every split (filters on ``train`` only); returns the splits and ``{split: report}``."""
    cleaned, report = {}, {}
    for name, ds in splits.items():
        cleaned[name], report[name] = clean_split(ds, cfg, name == "train", work, name, procs)
    return datasets.DatasetDict(cleaned), report
