"""Corpus → tokenizer → tokenized splits, cached, with a summary and a length histogram in the run directory.

The tokenized splits are cached under ``data.cache_dir/prepared/``, keyed by the corpus cache entry, the
tokenizer files' hash and ``data.max_len``: a second run with the same settings (or a resumed run, whose
run directory already has the tokenizer) does no tokenization at all.

Memory does not grow with the corpus beyond its length arrays: splits live in Arrow files (memory-mapped), maps
work batch by batch, the tokenizer trains on a bounded sample (:mod:`nmt.data.sample`), and whole columns are
only ever read as numpy arrays of lengths or drop codes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from matplotlib.figure import Figure

from nmt.config import Config
from nmt.data.cache import (
    META_FILE,
    cache_root,
    content_key,
    int_column,
    keep_rows,
    load_entry,
    map_progress,
    num_proc,
    save_entry,
    scratch_dir,
)
from nmt.data.corpus import corpus_cache, load_corpus
from nmt.data.sample import write_sample
from nmt.data.stages import (
    LOAD_TOKENIZED,
    LOAD_TOKENIZER,
    MAX_LEN,
    SAMPLE,
    SAVE_TOKENIZED,
    SUMMARY,
    TOKENIZE,
    TRAIN_TOKENIZER,
    StageHook,
    StageTimer,
    unwatched,
)
from nmt.errors import NmtError
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)
SUMMARY_FILE, HISTOGRAM_FILE = "summary.json", "lengths.png"
PREPARED_VERSION = 1  # bump when the tokenized layout changes


@dataclass
class PreparedData:
    """Tokenized splits: the corpus columns plus src_ids, tgt_ids (list[int], no specials), src_len, tgt_len."""

    splits: datasets.DatasetDict
    tokenizer: Tokenizer
    summary: dict

    def lengths(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(src_len, tgt_len)`` of a split as int arrays [n_pairs], e.g. for :class:`TokenBucketSampler`."""
        ds = self.splits[split]
        return int_column(ds, "src_len"), int_column(ds, "tgt_len")


class _Encode:
    """The tokenization map function; picklable (holds a directory, opens the models lazily per process)."""

    def __init__(self, tokenizer_dir: Path):
        self.tokenizer_dir = str(tokenizer_dir)
        self._tok: Tokenizer | None = None

    def __getstate__(self) -> dict:
        return {"tokenizer_dir": self.tokenizer_dir, "_tok": None}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._tok is None:
            self._tok = Tokenizer.load(self.tokenizer_dir)
        src, tgt = self._tok.encode_src(batch["src"]), self._tok.encode_tgt(batch["tgt"])
        return {
            "src_ids": src,
            "tgt_ids": tgt,
            "src_len": [len(s) for s in src],
            "tgt_len": [len(t) for t in tgt],
        }


_TOKEN_FEATURES = {
    "src_ids": datasets.Sequence(datasets.Value("int32")),
    "tgt_ids": datasets.Sequence(datasets.Value("int32")),
    "src_len": datasets.Value("int32"),
    "tgt_len": datasets.Value("int32"),
}


def _tokenizer(
    cfg: Config, run_dir: Path, train: datasets.Dataset, stage: StageHook
) -> tuple[Tokenizer, bool]:
    """The run directory's tokenizer when it has one (resume, translation), else one trained on a sample of
    ``train`` (``tokenizer.input_sentence_size`` sentences, drawn with ``seed``)."""
    if Tokenizer.exists(run_dir):
        with stage(LOAD_TOKENIZER):
            tok = Tokenizer.load(run_dir)
        saved = Tokenizer.saved_config(run_dir)
        wanted = Tokenizer.config_dict(cfg.tokenizer)
        if saved != wanted if saved is not None else tok.joint != cfg.tokenizer.joint:
            raise NmtError(
                f"{run_dir}: has a tokenizer trained with {saved or {'joint': tok.joint}}, but the config asks "
                f"for {wanted}; use a new run_dir, or delete the spm.* files there to retrain"
            )
        return tok, True
    with scratch_dir(cache_root(cfg.data.cache_dir)) as work:
        with stage(SAMPLE):
            sample = write_sample(
                train, cfg.tokenizer.input_sentence_size, cfg.tokenizer.joint, cfg.seed, work
            )
        with stage(TRAIN_TOKENIZER):
            return Tokenizer.train_files(*sample, cfg.tokenizer, run_dir), False


def _tokenize(
    splits: datasets.DatasetDict,
    tok: Tokenizer,
    run_dir: Path,
    max_len: int,
    work: Path,
    procs: int,
    progress: bool,
    stage: StageHook,
) -> tuple[datasets.DatasetDict, dict[str, int]]:
    """Add the id and length columns; drop training pairs with a side over ``max_len`` pieces.

    ``progress``: show a bar while a large split (see :func:`map_progress`) is tokenized.
    """
    out, dropped = {}, dict.fromkeys(splits, 0)
    encode = _Encode(run_dir)
    with stage(TOKENIZE):
        for name, ds in splits.items():
            with map_progress(len(ds), progress):
                out[name] = ds.map(
                    encode,
                    batched=True,
                    num_proc=num_proc(len(ds), procs),
                    features=datasets.Features({**ds.features, **_TOKEN_FEATURES}),
                    cache_file_name=str(work / f"tokens-{name}.arrow"),
                    new_fingerprint=content_key(tok.fingerprint(), name, len(ds)),
                    desc=f"tokenize {name}",
                )
    train = out["train"]
    if max_len > 0 and len(train):
        with stage(MAX_LEN):
            over = (int_column(train, "src_len") > max_len) | (int_column(train, "tgt_len") > max_len)
            dropped["train"] = int(over.sum())
            out["train"] = keep_rows(train, ~over, work / "kept-train.arrow")
    return datasets.DatasetDict(out), dropped


def _histogram(splits: datasets.DatasetDict, max_len: int, path: Path) -> None:
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    for ax, side in zip(fig.subplots(1, 2), ("src", "tgt")):
        lengths = {name: int_column(ds, f"{side}_len") for name, ds in splits.items() if len(ds)}
        top = max((int(v.max()) for v in lengths.values()), default=1)
        bins = np.linspace(0, top + 1, min(top + 2, 51))  # shared bins, so the splits' shapes compare
        for name, lens in lengths.items():
            # counted by numpy, drawn from the counts: ax.hist would copy the lengths (and weights) as floats
            counts, _ = np.histogram(lens, bins=bins)
            ax.stairs(counts / len(lens), bins, label=f"{name} ({len(lens):,})")
        if 0 < max_len <= 2 * top:
            ax.axvline(max_len, color="grey", linestyle=":", label=f"max_len {max_len}")
        ax.set(title=f"{side} length", xlabel="pieces per sentence", ylabel="fraction of pairs")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def _split_summary(ds: datasets.Dataset, dropped: dict[str, int]) -> dict[str, Any]:
    src, tgt = (int_column(ds, c) if len(ds) else np.zeros(0, np.int64) for c in ("src_len", "tgt_len"))
    return {
        "pairs": len(ds),
        "dropped": dropped,
        "src_tokens": int(src.sum()),
        "tgt_tokens": int(tgt.sum()),
        "src_len_max": int(src.max(initial=0)),
        "tgt_len_max": int(tgt.max(initial=0)),
    }


def prepare_data(cfg: Config, run_dir: Path, stage: StageHook = unwatched) -> PreparedData:
    """Load + clean the corpus, train (or reuse) the tokenizer in ``run_dir``, tokenize every split.

    Writes ``summary.json`` (pairs, drops by reason, tokens per split and side, seconds per stage) and
    ``lengths.png`` into ``run_dir``. ``stage`` watches each stage (names in :mod:`nmt.data.stages`; a stage a
    cache spares does not run).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timer = StageTimer(stage)

    corpus_hit = (corpus_cache(cfg.data) / META_FILE).is_file()
    corpus, report = load_corpus(cfg.data, timer)
    tok, reused = _tokenizer(cfg, run_dir, corpus["train"], timer)

    key = content_key(PREPARED_VERSION, corpus_cache(cfg.data).name, tok.fingerprint(), cfg.data.max_len)
    path = cache_root(cfg.data.cache_dir) / "prepared" / key
    with timer(LOAD_TOKENIZED):
        cached = load_entry(path)
    if cached is not None:
        log.info("tokenized data: cache hit %s", path)
        splits, meta = cached
    else:
        with scratch_dir(path.parent.parent) as work:
            splits, max_len_drops = _tokenize(
                corpus, tok, run_dir, cfg.data.max_len, work, cfg.data.num_proc, cfg.train.progress, timer
            )
            meta = {"max_len_dropped": max_len_drops}
            with timer(SAVE_TOKENIZED):
                splits = save_entry(path, splits, meta)

    with timer(SUMMARY):
        split_stats = {
            name: _split_summary(ds, {**report[name]["dropped"], "max_len": meta["max_len_dropped"][name]})
            for name, ds in splits.items()
        }
        _histogram(splits, cfg.data.max_len, run_dir / HISTOGRAM_FILE)
    seconds = {**timer.seconds, "total": time.perf_counter() - started}
    summary = {
        "corpus": {
            "source": str(cfg.data.source),
            "languages": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}",
            "cache": str(corpus_cache(cfg.data)),
            "cache_hit": corpus_hit,
        },
        "tokenizer": {
            "joint": cfg.tokenizer.joint,
            "trimmed": tok.trimmed,
            "src_vocab_size": tok.src_vocab_size,
            "tgt_vocab_size": tok.tgt_vocab_size,
            "reused": reused,
            "files": [p.name for p in tok.files],
        },
        "tokenized": {"cache": str(path), "cache_hit": cached is not None},
        "splits": split_stats,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return PreparedData(splits, tok, summary)


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table (what scripts/prepare_data.py prints)."""
    splits, corpus, tok = summary["splits"], summary["corpus"], summary["tokenizer"]
    reasons = sorted({r for s in splits.values() for r, n in s["dropped"].items() if n})
    rows = [
        ["split", "pairs", "src tokens", "tgt tokens", "max src", "max tgt"] + [f"drop {r}" for r in reasons]
    ]
    for name, s in splits.items():
        numbers = [s["pairs"], s["src_tokens"], s["tgt_tokens"], s["src_len_max"], s["tgt_len_max"]]
        rows.append([name] + [f"{n:,}" for n in numbers + [s["dropped"].get(r, 0) for r in reasons]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    table.insert(1, "-" * len(table[0]))
    same_size = tok["src_vocab_size"] == tok["tgt_vocab_size"]
    vocab = str(tok["src_vocab_size"]) if same_size else f"{tok['src_vocab_size']} / {tok['tgt_vocab_size']}"
    kind = ("joint, trimmed per side" if tok["trimmed"] else "joint") if tok["joint"] else "separate"
    header = [
        f"corpus: {corpus['source']} {corpus['languages']} ({'cached' if corpus['cache_hit'] else 'built'})",
        f"tokenizer: {kind}, vocab {vocab} ({'reused' if tok['reused'] else 'trained'})",
        f"tokenized data: {'cached' if summary['tokenized']['cache_hit'] else 'built'}; "
        f"{summary['seconds']['total']:.1f} s in all",
    ]
    return "\n".join(header + table)
