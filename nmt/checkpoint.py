"""Checkpoints that survive crashes and cannot run code.

File format: ``MAGIC`` (8 bytes) + SHA-256 of the payload (32 bytes) + payload, where the payload is a
``torch.save`` of plain containers and tensors. Writing goes to a hidden temp file in the same directory, is
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX), so a reader sees the old file or the
new one, never half of one; a failed write (a full disk) raises :class:`CheckpointError` and leaves the old
file. Reading checks the digest (truncation, bit flips) and unpickles with ``weights_only=True``, which refuses
any payload that would construct arbitrary objects or run code. :func:`keep_previous` keeps the file a write is
about to replace, so a resume has a fallback should the newest file be damaged.

The layout of a model directory's checkpoints lives here too: ``<model_dir>/checkpoints/<name>.pt`` with the
names ``best``, ``last``, ``last.prev`` and ``step_<step>``, how a translator's ``checkpoint=`` resolves to a
file, and the averaging of kept step checkpoints. torch is imported where a tensor is read or written, so
that the layout names cost a light process (the fault drill's) nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.errors import NmtError

if TYPE_CHECKING:
    import torch

MAGIC = b"NMTCKPT1"
_DIGEST_BYTES = 32
TEMP_PREFIX = ".tmp-"

CHECKPOINT_DIR = "checkpoints"  # inside a model directory
BEST = "best"  # the weights with the best dev BLEU so far
LAST = "last"  # the full training state at the latest save: what resume=true continues from
PREVIOUS_LAST = "last.prev"  # the full training state before the current `last`: resume's fallback
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


class CheckpointError(NmtError):
    """A checkpoint is missing, damaged, or unsafe to load."""


def save_checkpoint(state: dict[str, Any], path: str | Path, fsync: Callable[[int], None] = os.fsync) -> None:
    """Atomically write ``state`` (nested dicts/lists of tensors and primitives) to ``path``.

    ``fsync`` flushes a file descriptor to disk: the temp file's, then its directory's (after the rename). Tools
    that rehearse a slow or failing disk pass their own.
    """
    import torch

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
            fsync(handle.fileno())
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
        _fsync_dir(path.parent, fsync)
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


def _fsync_dir(directory: Path, fsync: Callable[[int], None]) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing file, wrong format, digest mismatch (truncated or corrupted), or a payload
            that ``weights_only=True`` refuses.
    """
    import torch

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


# ------------------------------------------------------------------------------ a model directory's layout
def checkpoint_path(ckpt_dir: Path, name: str) -> Path:
    """The file of checkpoint ``name`` (``best``, ``last``, ``last.prev``, ``step_00001000``) in ``ckpt_dir``."""
    return ckpt_dir / f"{name}.pt"


def step_name(step: int) -> str:
    """The name of the weights-only checkpoint a validation at ``step`` keeps (``train.keep_checkpoints``)."""
    return f"step_{step:08d}"


def step_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The step checkpoints in ``ckpt_dir``, oldest (lowest step) first."""
    found = []
    for path in ckpt_dir.glob("step_*.pt"):
        match = _STEP_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(model_dir: Path, checkpoint: str) -> Path:
    """``best`` / ``last`` / a file name inside ``model_dir/checkpoints`` / a path; ``best`` falls back to
    ``last`` for a run that never validated."""
    ckpt_dir = model_dir / CHECKPOINT_DIR
    candidates = [checkpoint_path(ckpt_dir, checkpoint), ckpt_dir / checkpoint, Path(checkpoint)]
    if checkpoint == BEST:
        candidates.append(checkpoint_path(ckpt_dir, LAST))
    for path in candidates:
        if path.is_file():
            return path
    raise NmtError(f"{model_dir}: no checkpoint {checkpoint!r} in {ckpt_dir} (train a model first)")


def kept_checkpoints(model_dir: Path, k: int, option: str) -> list[Path]:
    """The last ``k`` step checkpoints a run kept (``train.keep_checkpoints``), oldest first; ``option`` is the
    setting that asked for them, named in the error when there are none."""
    kept = step_checkpoints(model_dir / CHECKPOINT_DIR)[-k:]
    if not kept:
        raise NmtError(f"{model_dir}: {option}={k}, but no step checkpoints are kept there")
    return kept


def average_state_dicts(paths: Sequence[Path], device: torch.device) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights in several checkpoints of one run."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        weights = load_checkpoint(path, map_location=device)["model"]
        for name, tensor in weights.items():
            total[name] = total[name] + tensor.float() if name in total else tensor.float().clone()
    return {name: tensor / len(paths) for name, tensor in total.items()}
