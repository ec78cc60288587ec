"""Dropout (Srivastava et al., 2014) whose mask is drawn from random 16-bit integers on the CPU.

In training each element is kept with probability 1 - p and scaled by 1 / (1 - p), so its expectation is
unchanged; in evaluation the layer is the identity. The function is ``nn.Dropout``'s; only the way the mask is
drawn differs. On the CPU torch's ``bernoulli_`` (behind ``F.dropout``) draws each element through a
double-precision path, and even ``uniform_`` turns every 32-bit draw of its generator into a float one element
at a time: dropout masks were 6-7 % of a training update. A full-range ``random_`` over int64 fills 64 random
bits per element at a fraction of that cost (2026, Intel Xeon, 2 threads, 3 million elements: 7 ms against
23 ms for ``uniform_``), so each 64-bit draw here gives four 16-bit draws, and an element is kept when its draw
lies at or above the ``round(p * 2**16)`` lowest of the 2**16 values.

So p is used rounded to a multiple of 2**-16 (at most 7.7e-6 off; ``uniform_``'s float32 draw rounds it too, to
2**-24), and survivors are scaled by the inverse of the rounded keep probability, so the expectation stays exact.
Elsewhere (CUDA, MPS) ``F.dropout`` is one fused kernel and stays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DRAW_LEVELS = 1 << 16  # the values one 16-bit draw takes


def random_int16(n: int) -> Tensor:
    """``[n]`` int16, each uniform over all 2**16 values: a full-range int64 draw read as four int16 each."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    return words.view(torch.int16)[:n]


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by 1 / (1 - p) when ``training``;
    ``x`` itself otherwise. Any shape; the result has the shape and dtype of ``x``. On the CPU p is rounded to a
    multiple of 2**-16 (module docstring)."""
    if not training or p == 0.0:
        return x
    dropped_levels = round(p * DRAW_LEVELS)
    if x.device.type != "cpu" or dropped_levels == DRAW_LEVELS:
        return F.dropout(x, p, training=True)
    # int16 runs from -2**15: the dropped_levels lowest values are those below dropped_levels - 2**15
    keep = random_int16(x.numel()).view(x.shape).ge(dropped_levels - DRAW_LEVELS // 2)
    return x * keep.to(x.dtype).mul_(DRAW_LEVELS / (DRAW_LEVELS - dropped_levels))


class Dropout(nn.Module):
    """``nn.Dropout`` with the mask of :func:`dropout`: on in ``train()`` mode, the identity in ``eval()``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
