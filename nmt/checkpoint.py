"""Checkpoints that survive crashes and cannot run code.

File format: ``MAGIC`` (8 bytes) + SHA-256 of the payload (32 bytes) + payload, where the payload is a
``torch.save`` of plain containers and tensors. Writing goes to a hidden temp file in the same directory, is
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX), so a reader sees the old file or the
new one, never half of one. Reading checks the digest (truncation, bit flips) and unpickles with
``weights_only=True``, which refuses any payload that would construct arbitrary objects or run code.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from nmt.errors import NmtError

MAGIC = b"NMTCKPT1"
_DIGEST_BYTES = 32
TEMP_PREFIX = ".tmp-"


class CheckpointError(NmtError):
    """A checkpoint is missing, damaged, or unsafe to load."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write ``state`` (nested dicts/lists of tensors and primitives) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    try:
        with open(temp, "wb") as handle:
            handle.write(MAGIC)
            handle.write(hashlib.sha256(payload).digest())
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing file, wrong format, digest mismatch (truncated or corrupted), or a payload
            that ``weights_only=True`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    data = path.read_bytes()
    header = len(MAGIC) + _DIGEST_BYTES
    if len(data) < header or not data.startswith(MAGIC):
        raise CheckpointError(f"{path}: not an nmt checkpoint (bad header); was it written by another tool?")
    digest, payload = data[len(MAGIC) : header], data[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch: the file is truncated or corrupted")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError for refused or malformed payloads
        raise CheckpointError(
            f"{path}: refused to load: the payload holds objects that weights_only loading does not allow "
            f"(it could run code) or is malformed: {exc}"
        ) from exc


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete temp files a killed writer left behind; returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(directory.glob(f"{TEMP_PREFIX}*"))
    for temp in stale:
        temp.unlink(missing_ok=True)
    return stale
