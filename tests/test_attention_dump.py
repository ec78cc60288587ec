"""Attention dumps: chunks appended one after another read back as one sequence of records; damaged and foreign
files are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nmt.attention_dump import MAGIC, encode_chunk, read_attention_dump
from nmt.errors import NmtError


def records(n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(n)
    return [
        {
            "source": f"line {i}",
            "src_tokens": ["▁a"] * (i + 1) + ["</s>"],
            "tgt_tokens": ["▁b"] * i + ["</s>"],
            "attention": torch.rand(i + 1, i + 2, generator=gen).softmax(-1),
        }
        for i in range(n)
    ]


def write_dump(path: Path, chunks: list[list[dict]]) -> Path:
    path.write_bytes(MAGIC + b"".join(encode_chunk(chunk) for chunk in chunks))
    return path


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys() and a["source"] == b["source"] and a["tgt_tokens"] == b["tgt_tokens"]
        assert torch.equal(a["attention"], b["attention"])


def test_chunks_read_back_in_order_as_one_sequence(tmp_path: Path) -> None:
    expected = records(9)
    chunked = write_dump(tmp_path / "chunked.pt", [expected[:4], [], expected[4:5], expected[5:]])
    assert_same_records(list(read_attention_dump(chunked)), expected)
    assert list(read_attention_dump(write_dump(tmp_path / "empty.pt", []))) == []


def test_reading_stops_where_the_reader_stops(tmp_path: Path) -> None:
    """A reader that needs the first records does not load the chunks after them."""
    path = write_dump(tmp_path / "d.pt", [records(3)])
    with open(path, "ab") as handle:
        handle.write((10).to_bytes(8, "little") + b"not torch!")  # a second chunk that cannot load
    reader = read_attention_dump(path)
    assert [next(reader)["source"] for _ in range(3)] == ["line 0", "line 1", "line 2"]
    with pytest.raises(NmtError, match="chunk 2 is not an attention chunk written by translate"):
        next(reader)


def test_damaged_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(NmtError, match="attention file not found"):
        list(read_attention_dump(tmp_path / "missing.pt"))
    whole = write_dump(tmp_path / "whole.pt", [records(3), records(2)])
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:-5])
    with pytest.raises(NmtError, match="chunk 2 is cut short"):
        list(read_attention_dump(cut))
    old = tmp_path / "old.pt"
    torch.save(records(2), old)  # a single list, as translate wrote dumps before it streamed
    with pytest.raises(NmtError, match="not an attention dump written by this version of translate"):
        list(read_attention_dump(old))
    other = tmp_path / "other.pt"
    other.write_bytes(MAGIC + encode_chunk([{"no": "attention"}]))
    with pytest.raises(NmtError, match="chunk 1 is not an attention chunk written by translate"):
        list(read_attention_dump(other))
