"""The corpus schema shared by every source, and streaming construction of a split from a generator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets

from nmt.errors import NmtError

# Every source builds its splits through this module. datasets draws a bar for every small map or save;
# prepare_data reports its own timings and counts instead (cache.map_progress shows one for a long map).
datasets.disable_progress_bars()

CORPUS_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "src": datasets.Value("string"),
        "tgt": datasets.Value("string"),
        "refs": datasets.Sequence(datasets.Value("string")),  # extra references besides tgt (may be empty)
    }
)
SPLITS = ("train", "dev", "test")


def empty_split() -> datasets.Dataset:
    """A split with the corpus columns and no rows (a source without a dev or test set)."""
    return datasets.Dataset.from_dict({name: [] for name in CORPUS_FEATURES}, features=CORPUS_FEATURES)


def from_generator(
    generator: Callable[..., Iterator[dict[str, Any]]], gen_kwargs: dict[str, Any], work: Path
) -> datasets.Dataset:
    """Stream rows into an Arrow-backed split under ``work`` (rows never sit in Python lists).

    ``datasets`` wraps exceptions raised by the generator; an :class:`NmtError` (bad input) is re-raised as is.
    """
    try:
        return datasets.Dataset.from_generator(
            generator, features=CORPUS_FEATURES, cache_dir=str(work), gen_kwargs=gen_kwargs
        )
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, NmtError):
            raise cause from None
        raise
    except ValueError as exc:
        # `datasets` cannot build a split from a generator that yields nothing (e.g. split=books with only
        # dev_books: no test verse); the split is then simply empty.
        if "corresponds to no data" not in str(exc):
            raise
        return empty_split()
