"""Attention dumps: the file ``translate ... dump_attention=FILE`` writes and ``visualize attention_file=FILE``
reads.

Translation streams its input in chunks, so a dump is written one chunk at a time and never held whole: the
line :data:`MAGIC`, then per chunk an 8-byte little-endian length and that many bytes of ``torch.save`` of the
chunk's list of records. A record is ``{source, src_tokens, tgt_tokens, attention [len(tgt_tokens),
len(src_tokens)]}`` (:func:`nmt.translate.attention_records`), one per input line, in input order. Chunks are
loaded with ``weights_only=True``: a dump holds only strings, lists and tensors, never code.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import torch

from nmt.errors import NmtError

MAGIC = b"nmt attention dump 1\n"
_LENGTH_BYTES = 8


def encode_chunk(records: list[dict]) -> bytes:
    """One chunk of a dump, the records of consecutive input lines, as the bytes that follow :data:`MAGIC` or
    the chunk before."""
    buffer = io.BytesIO()
    torch.save(records, buffer)
    return len(buffer.getbuffer()).to_bytes(_LENGTH_BYTES, "little") + buffer.getvalue()


def read_attention_dump(path: str | Path) -> Iterator[dict]:
    """The records of a dump, in input order, read one chunk at a time.

    Raises:
        NmtError: ``path`` is missing, is not a dump, or ends inside a chunk (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise NmtError(
            f"{path}: attention file not found (write one with translate ... dump_attention={path})"
        )
    with open(path, "rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise NmtError(
                f"{path}: not an attention dump written by this version of translate; write it again with "
                f"translate ... dump_attention={path}"
            )
        number = 0
        while header := handle.read(_LENGTH_BYTES):
            number += 1
            size = int.from_bytes(header, "little")
            data = handle.read(size)
            if len(header) < _LENGTH_BYTES or len(data) < size:
                raise NmtError(
                    f"{path}: chunk {number} is cut short; translate the input again to rewrite it"
                )
            yield from _load_chunk(data, path, number)


def _load_chunk(data: bytes, path: Path, number: int) -> list[dict]:
    try:
        records = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged data
        raise NmtError(
            f"{path}: chunk {number} is not an attention chunk written by translate: {exc}"
        ) from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) and "attention" in r for r in records):
        raise NmtError(
            f"{path}: chunk {number} is not an attention chunk written by translate (expected records)"
        )
    return records
