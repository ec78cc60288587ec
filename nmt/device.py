"""Run-time set-up shared by training and the recipes: device (cuda, then mps, then cpu, unless the config names
one), thread count and seeds."""

from __future__ import annotations

import random

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


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)
