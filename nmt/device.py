"""Run-time set-up shared by training and the recipes: device (cuda, then mps, then cpu, unless the config names
one), thread count, seeds and the C allocator's policy for freed memory."""

from __future__ import annotations

import ctypes
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nmt.errors import NmtError


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto | cpu | cuda | cuda:N | mps`` to an available ``torch.device``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise NmtError(f"device={name!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NmtError(f"device={name!r} asked for CUDA, but torch sees no CUDA device (use device=auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise NmtError(f"device={name!r} asked for MPS, which is not available here (use device=auto)")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PROC_STAT = Path("/proc/stat")
LOAD_SAMPLE_S = 0.1  # how long the cores' busy time is watched before choosing a thread count


def cpu_times(stat: Path = PROC_STAT) -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of all cores since boot from ``/proc/stat``'s ``cpu`` line (Linux; None
    elsewhere). Idle and I/O wait count as not busy."""
    try:
        fields = stat.read_text(encoding="ascii").split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(t) for t in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return sum(ticks) - idle, sum(ticks)


def idle_cores(before: tuple[int, int], after: tuple[int, int], cores: int) -> int:
    """Cores left idle between two :func:`cpu_times` samples of a machine with ``cores`` cores, rounded to the
    nearest whole core."""
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return cores
    return cores - round(cores * busy / total)


def auto_threads(sample_s: float = LOAD_SAMPLE_S, stat: Path = PROC_STAT) -> int:
    """The thread count ``threads=0`` picks: the cores this process may use that no other process keeps busy
    (watched for ``sample_s`` seconds), at least one.

    torch's OpenMP threads spin while they wait for each other. On an idle machine one per core is fastest; when
    another process keeps a core busy, the thread that shares its core stalls the rest at every parallel region
    (2 threads next to one busy process on 2 cores trained at 0.32x their idle speed, 1 thread at 0.97x: README,
    CPU threads)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    before = cpu_times(stat)
    if before is None:
        return usable
    time.sleep(sample_s)
    after = cpu_times(stat)
    cores = os.cpu_count() or usable
    return max(1, min(usable, idle_cores(before, after, cores) if after else usable))


def set_threads(threads: int) -> int:
    """Set torch's intra-op thread count: ``threads``; with 0, ``OMP_NUM_THREADS`` when it is set (the user's or
    torchrun's choice, which torch already follows), else the cores idle right now (:func:`auto_threads`).
    Returns the count in use."""
    if threads == 0 and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    count = threads if threads > 0 else auto_threads()
    torch.set_num_threads(count)
    return count


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEPT_FREE_BYTES = 1 << 30  # free memory at the top of the heap that glibc may keep before returning it


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep the memory that torch frees for the next allocation, instead of handing it back
    to the kernel. Returns whether it applied (False off Linux or without glibc's ``mallopt``).

    By default glibc serves each allocation above its mmap threshold (128 KiB, rising to at most 32 MiB as
    large blocks are freed) with a fresh ``mmap`` and unmaps it on ``free``, and trims the heap's free top. A
    training step allocates and frees tensors of the same sizes at every update, the ``[positions, vocab]``
    logits, log-probabilities and their gradient above all, so each update page-faulted its memory in again,
    4 KiB at a time, and the kernel zeroed every page: 2.7 million page faults and 4.8 s of system time in 80
    updates of the benchmark's shape, 0.5 million and 1.1 s in the default's (README, speed section). With mmap
    off (``M_MMAP_MAX`` 0), large blocks come from the heap too, and with the trim threshold at 1 GiB the heap
    keeps them: the next update reuses the same pages. The cost is that resident memory stays at the heap's peak,
    which a training run reaches within its first updates (the benchmark's peak RSS did not move); a synthetic
    loop of 43-59 MB blocks in four sizes peaked at about twice glibc's default, then stopped growing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
