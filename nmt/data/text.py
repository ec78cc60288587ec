"""Local parallel text: Moses-style ``PREFIX.{src_lang}`` / ``PREFIX.{tgt_lang}`` pairs, or TSV files.

TSV lines are ``src<TAB>tgt[<TAB>ref...]``. Files are read by :func:`nmt.lines.read_lines` (streamed, ``.gz``
transparently, a BOM dropped, CRLF endings accepted) as strict UTF-8 text, and every problem is reported
with the file and line.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from nmt.config import DataConfig, TextFormat
from nmt.data.features import SPLITS, empty_split, from_generator
from nmt.errors import NmtError
from nmt.lines import OnInvalid, read_lines


def _check_file(path: Path) -> None:
    """Fail early, naming the file, on what can be seen without reading it."""
    if not path.exists():
        raise NmtError(f"{path}: file not found")
    if not path.is_file():
        raise NmtError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise NmtError(f"{path}: not readable (check its permissions)")
    if path.stat().st_size == 0:
        raise NmtError(f"{path}: empty file")


def _corpus_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each line of a corpus file: strict UTF-8, and at least one line."""
    n = 0
    for n, line in read_lines(path, on_invalid=OnInvalid.error):
        yield n, line
    if n == 0:  # a .gz file can be empty inside
        raise NmtError(f"{path}: no lines (empty file)")


def _moses_rows(src_path: str, tgt_path: str) -> Iterator[dict[str, Any]]:
    src_lines, tgt_lines = _corpus_lines(Path(src_path)), _corpus_lines(Path(tgt_path))
    n = 0
    for src, tgt in itertools.zip_longest(src_lines, tgt_lines):
        if src is None or tgt is None:
            n_src = n + (0 if src is None else 1 + sum(1 for _ in src_lines))
            n_tgt = n + (0 if tgt is None else 1 + sum(1 for _ in tgt_lines))
            raise NmtError(
                f"line counts differ: {src_path} has {n_src} lines but {tgt_path} has {n_tgt}; "
                "the two files must be line-aligned translations"
            )
        n = src[0]
        yield {"id": str(n), "src": src[1], "tgt": tgt[1], "refs": []}


def _tsv_rows(path: str) -> Iterator[dict[str, Any]]:
    for n, line in _corpus_lines(Path(path)):
        if not line.strip():
            yield {"id": str(n), "src": "", "tgt": "", "refs": []}  # dropped and counted by cleaning
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise NmtError(f"{path}:{n}: expected src<TAB>tgt[<TAB>ref...], found no TAB")
        yield {"id": str(n), "src": fields[0], "tgt": fields[1], "refs": fields[2:]}


def _existing(path: Path) -> Path:
    """``path``, or ``path.gz`` when only the compressed file exists."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def split_files(cfg: DataConfig, split: str) -> list[Path]:
    """The files of one split (none when the split is not configured)."""
    where = getattr(cfg.text, split)
    if not where:
        return []
    base = Path(where).expanduser()
    if cfg.text.format == TextFormat.tsv:
        return [base]
    return [_existing(base.with_name(f"{base.name}.{lang}")) for lang in (cfg.src_lang, cfg.tgt_lang)]


def fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What determines the corpus: the format and each file's path, size and mtime."""
    files = {}
    for split in SPLITS:
        for path in split_files(cfg, split):
            _check_file(path)
            stat = path.stat()
            files[str(path.resolve())] = [split, stat.st_size, stat.st_mtime_ns]
    return {"format": str(cfg.text.format), "langs": [cfg.src_lang, cfg.tgt_lang], "files": files}


def build(cfg: DataConfig, work: Path) -> datasets.DatasetDict:
    """Raw train/dev/test splits; a split without files (dev or test) is empty."""
    if not cfg.text.train:
        raise NmtError(
            "data.source=text needs data.text.train (moses: a path prefix for PREFIX.src/PREFIX.tgt; "
            "tsv: a file), and usually data.text.dev / data.text.test"
        )
    splits = {}
    for split in SPLITS:
        files = split_files(cfg, split)
        for path in files:
            _check_file(path)
        if not files:
            splits[split] = empty_split()
        elif cfg.text.format == TextFormat.tsv:
            splits[split] = from_generator(_tsv_rows, {"path": str(files[0])}, work)
        else:
            splits[split] = from_generator(
                _moses_rows, {"src_path": str(files[0]), "tgt_path": str(files[1])}, work
            )
    return datasets.DatasetDict(splits)
