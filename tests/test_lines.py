"""The line reader: what a line is, BOM/CRLF, gzip and stdin, and the two policies for bytes that are not text."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import pytest

from nmt.errors import NmtError
from nmt.lines import OnInvalid, read_lines

POLICIES = list(OnInvalid)


def lines_of(path: str | Path, on_invalid: OnInvalid) -> list[tuple[int, str]]:
    return list(read_lines(path, on_invalid=on_invalid))


@pytest.mark.parametrize("on_invalid", POLICIES)
def test_splits_on_newline_only(tmp_path: Path, on_invalid: OnInvalid) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes("a\u2028b\r\n\nc\x0cd\re\x85".encode())  # U+2028, \x0c, a lone \r, U+0085 stay inside
    assert lines_of(path, on_invalid) == [(1, "a\u2028b"), (2, ""), (3, "c\x0cd\re\x85")]


@pytest.mark.parametrize("on_invalid", POLICIES)
def test_bom_at_line_starts_crlf_and_a_last_line_without_newline(
    tmp_path: Path, on_invalid: OnInvalid
) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\n\xef\xbb\xbfthree\r\r\nfour")  # a BOM where files were joined
    assert lines_of(path, on_invalid) == [(1, "one"), (2, "two"), (3, "three\r"), (4, "four")]


@pytest.mark.parametrize("on_invalid", POLICIES)
def test_gzip_stdin_and_empty_input(tmp_path: Path, monkeypatch, on_invalid: OnInvalid) -> None:
    (tmp_path / "x.txt.gz").write_bytes(gzip.compress(b"un\ndeux\n"))
    assert lines_of(tmp_path / "x.txt.gz", on_invalid) == [(1, "un"), (2, "deux")]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\r\nb\n")))
    assert lines_of("-", on_invalid) == [(1, "a"), (2, "b")]
    (tmp_path / "empty.txt").write_bytes(b"")
    assert lines_of(tmp_path / "empty.txt", on_invalid) == []
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")  # only a byte order mark: still an empty file
    assert lines_of(tmp_path / "bom.txt", on_invalid) == []
    (tmp_path / "bom-line.txt").write_bytes(b"\xef\xbb\xbf\n")  # a BOM, then one empty line
    assert lines_of(tmp_path / "bom-line.txt", on_invalid) == [(1, "")]


@pytest.mark.parametrize("on_invalid", POLICIES)
def test_unreadable_files_are_named(tmp_path: Path, on_invalid: OnInvalid) -> None:
    with pytest.raises(NmtError, match="missing.txt: file not found"):
        lines_of(tmp_path / "missing.txt", on_invalid)
    with pytest.raises(NmtError, match=r"cannot read \(Is a directory\)"):
        lines_of(tmp_path, on_invalid)
    (tmp_path / "bad.gz").write_bytes(b"this is not gzip data\n")
    with pytest.raises(NmtError, match="bad.gz: cannot read"):
        lines_of(tmp_path / "bad.gz", on_invalid)


def test_error_policy_names_file_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\nfine\nbad d\xe9j\xe0\nnever read\n".encode("latin-1"))
    lines = read_lines(path, on_invalid=OnInvalid.error)
    assert next(lines) == (1, "ok") and next(lines) == (2, "fine")  # streamed: the bad line is not read yet
    with pytest.raises(NmtError, match=rf"{path}:3: invalid UTF-8 at byte 5 of the line; convert"):
        next(lines)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"abc\nx\x00y\n")
    with pytest.raises(NmtError, match=rf"{binary}:2: NUL byte; this looks like a binary file"):
        lines_of(binary, OnInvalid.error)


def test_replace_policy_keeps_every_line_and_reports_line_numbers(tmp_path: Path, capsys) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\r\n\xff\xfe\nx\x00y\n\xed\xa0\x80\nthree")
    assert lines_of(path, OnInvalid.replace) == [
        (1, "one"),
        (2, "\ufffd\ufffd"),
        (3, "x\x00y"),  # NUL is valid UTF-8: kept for the caller to normalise
        (4, "\ufffd\ufffd\ufffd"),  # an encoded surrogate is invalid UTF-8
        (5, "three"),
    ]
    assert (
        capsys.readouterr().err == f"warning: {path}: invalid UTF-8 replaced by U+FFFD on 2 line(s): 2, 4\n"
    )


def test_replace_policy_lists_the_first_ten_lines(tmp_path: Path, capsys) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xff\n" * 12)
    assert len(lines_of(path, OnInvalid.replace)) == 12
    assert capsys.readouterr().err.endswith("on 12 line(s): 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ...\n")
