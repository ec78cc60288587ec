"""Text files as lines: one reader for corpora, hypothesis and reference files, and translation input.

A line is what lies between ``\\n`` bytes, so the count matches ``wc -l`` (plus a last line without newline);
Unicode line separators (``\\u2028``, ``\\x85``, a lone ``\\r``, ...) stay inside their line. The ``\\n`` and a
``\\r`` before it (CRLF) are removed, and a BOM at the start of a line (line 1, or where files were
concatenated) is no content. ``.gz`` files are read transparently and ``-`` is stdin. Lines are streamed, so a
file of tens of millions of lines never sits in memory.

What happens to a line that is not UTF-8 text is the caller's explicit choice, :class:`OnInvalid`.
"""

from __future__ import annotations

import contextlib
import enum
import gzip
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nmt.errors import NmtError

STDIN = "-"
_BOM = "\ufeff"
_SHOWN = 10  # line numbers listed in the invalid-UTF-8 report


class OnInvalid(enum.Enum):
    """What :func:`read_lines` does with a line that is not UTF-8 text."""

    error = "error"  # corpora, references: invalid UTF-8 or a NUL byte (a binary file) stops with file:line
    replace = "replace"  # translation input: invalid UTF-8 becomes U+FFFD, reported on stderr by line number


def _open(path: str | Path) -> contextlib.AbstractContextManager[BinaryIO]:
    if str(path) == STDIN:
        return contextlib.nullcontext(sys.stdin.buffer)  # not closed: it is the process's
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _decode_strict(raw: bytes, path: str | Path, number: int) -> str:
    if b"\x00" in raw:
        raise NmtError(f"{path}:{number}: NUL byte; this looks like a binary file, not UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NmtError(
            f"{path}:{number}: invalid UTF-8 at byte {exc.start} of the line; convert the file to UTF-8 "
            "(e.g. iconv -f LATIN1 -t UTF-8)"
        ) from exc


def _decode_replacing(raw: bytes, number: int, replaced: list[int]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        replaced.append(number)
        return raw.decode("utf-8", errors="replace")


def read_lines(path: str | Path, *, on_invalid: OnInvalid) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each line of ``path`` (``-``: stdin), numbered from 1; an empty file has none.

    With ``OnInvalid.replace``, once the last line is read, the lines whose invalid UTF-8 was replaced are
    reported on stderr (how many, and the first line numbers).

    Raises:
        NmtError: the file is missing or unreadable (a damaged ``.gz``), or, with ``OnInvalid.error``, a line is
            not UTF-8 text (the message names file and line).
    """
    replaced: list[int] = []
    try:
        with _open(path) as handle:
            for number, raw in enumerate(handle, 1):
                if number == 1 and raw == _BOM.encode():
                    return  # a file holding only a byte order mark is an empty text file: no lines
                raw = raw.removesuffix(b"\n").removesuffix(b"\r")
                if on_invalid is OnInvalid.error:
                    text = _decode_strict(raw, path, number)
                else:
                    text = _decode_replacing(raw, number, replaced)
                yield number, text.removeprefix(_BOM)
    except FileNotFoundError as exc:
        raise NmtError(f"{path}: file not found") from exc
    except (OSError, EOFError, zlib.error) as exc:  # a directory, permissions, a damaged/not-really-gzip file
        raise NmtError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc
    if replaced:
        shown = ", ".join(map(str, replaced[:_SHOWN])) + (" ..." if len(replaced) > _SHOWN else "")
        print(
            f"warning: {path}: invalid UTF-8 replaced by U+FFFD on {len(replaced)} line(s): {shown}",
            file=sys.stderr,
        )
