"""Corpus loading: a source (bible, text, hf) → cleaned train/dev/test ``DatasetDict``, cached as Arrow.

The cache entry lives under ``data.cache_dir/corpus/`` and is keyed by the source's inputs (configuration and
file stats) plus the cleaning configuration, so a second run with the same settings reads it back in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import datasets

from nmt.config import CorpusSource, DataConfig
from nmt.data import bible, hf, text
from nmt.data.cache import cache_root, content_key, load_entry, save_entry, scratch_dir
from nmt.data.clean import clean_corpus
from nmt.data.stages import CLEAN, LOAD_CORPUS, READ, SAVE_CORPUS, StageHook, unwatched

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when the cached layout or the cleaning rules change
SOURCES: dict[str, ModuleType] = {CorpusSource.bible: bible, CorpusSource.text: text, CorpusSource.hf: hf}


def corpus_cache(cfg: DataConfig) -> Path:
    """The cache directory for this corpus + cleaning configuration (it may not exist yet)."""
    source = str(cfg.source)
    key = content_key(CACHE_VERSION, source, SOURCES[source].fingerprint(cfg), cfg.clean)
    return cache_root(cfg.cache_dir) / "corpus" / f"{source}-{key}"


def load_corpus(cfg: DataConfig, stage: StageHook = unwatched) -> tuple[datasets.DatasetDict, dict]:
    """The cleaned corpus: splits ``train``/``dev``/``test`` with columns id, src, tgt, refs (list[str]).

    Returns the splits and the cleaning report ``{split: {"kept": n, "dropped": {reason: n}}}``.
    ``refs`` holds extra references besides ``tgt`` (Bible ``ref_versions``, TSV columns after the second).
    ``stage`` watches the stages (:mod:`nmt.data.stages`): the cache look-up, then on a miss read, clean, save.
    """
    path = corpus_cache(cfg)
    with stage(LOAD_CORPUS):
        cached = load_entry(path)
    if cached is not None:
        log.info("corpus: cache hit %s", path)
        splits, meta = cached
        return splits, meta["report"]
    log.info("corpus: building %s", path)
    with scratch_dir(path.parent.parent) as work:
        with stage(READ):
            raw = SOURCES[str(cfg.source)].build(cfg, work)
        with stage(CLEAN):
            cleaned, report = clean_corpus(raw, cfg.clean, work, cfg.num_proc)
        with stage(SAVE_CORPUS):
            splits = save_entry(path, cleaned, {"report": report, "source": str(cfg.source)})
    return splits, report
