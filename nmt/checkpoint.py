"""Checkpoints that survive crashes and cannot run code.

File format: ``MAGIC`` (8 bytes) + SHA-256 of the payload (32 bytes) + payload, where the payload is a
``torch.save`` of plain containers and tensors. Writing goes to a hidden temp file in the same directory, is
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX), so a reader sees the old file or the
new one, never half of one; a failed write (a full disk) raises :class:`CheckpointError` and leaves the old
file. Reading checks the digest (truncation, bit flips) and unpickles with ``weights_only=True``, which refuses
any payload that would construct arbitrary objects or run code. :func:`keep_previous` keeps the file a write is
about to replace, so a resume has a fallback should the newest file be damaged.
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
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(MAGIC)
            handle.write(hashlib.sha256(payload).digest())
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:  # a full disk, a quota, permissions: the previous file (if any) is unchanged
        temp.unlink(missing_ok=True)
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({exc.strerror or exc}); any previous version of it is intact. "
            "Free disk space (or fix permissions) and continue with resume=true"
        ) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    try:
        _fsync_dir(path.parent)
    except OSError as exc:
        raise CheckpointError(
            f"{path}: written, but syncing {path.parent} failed ({exc.strerror or exc}): the disk is failing?"
        ) from exc


def keep_previous(path: str | Path, previous: str | Path) -> None:
    """Make ``previous`` hold what ``path`` holds now, before ``path`` is overwritten (a no-op without ``path``).

    A hard link under a temp name, renamed over ``previous``, is atomic and copies nothing, and ``path`` never
    goes missing. Where the filesystem has no hard links, ``path`` itself is renamed to ``previous``: until the
    new ``path`` is written, a reader finds only ``previous``.
    """
    path, previous = Path(path), Path(previous)
    if not path.is_file() or (previous.is_file() and os.path.samefile(path, previous)):
        return  # nothing to keep, or kept already (the write that followed was killed or failed)
    temp = previous.with_name(f"{TEMP_PREFIX}{previous.name}")
    try:
        temp.unlink(missing_ok=True)
        try:
            os.link(path, temp)
        except OSError:
            os.replace(path, previous)
            return
        os.replace(temp, previous)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CheckpointError(
            f"{previous}: cannot keep the previous checkpoint ({exc.strerror or exc})"
        ) from exc


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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from exc
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
