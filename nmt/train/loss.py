"""Label-smoothed cross-entropy over the non-pad target tokens, with its gradient written out.

With smoothing eps and vocabulary V, the target distribution is ``q = (1 - eps) * onehot(y) + eps / V``, so

    loss = -sum_t sum_v q_v log p_v = (1 - eps) * NLL + eps * mean_v(-log p_v)

summed over non-pad positions. One ``log_softmax`` serves both terms, and the NLL is returned too, so
perplexity reports the model, not the smoothing.

The gradient with respect to the logits x of a position with upstream gradient g is the textbook one,

    dloss/dx_v = g * (p_v - q_v)

and :class:`_SmoothedCrossEntropy` computes it from the saved log-probabilities in two passes over the
``[positions, V]`` tensor (exp, then one fused multiply-add; the target's -(1 - eps) g is scattered on top).
Autograd through ``log_softmax``, ``gather``, ``mean`` and the masks takes about twice as many passes over that
tensor, the largest of a training step: the output layer's logits.

The forward clamps the saved log-probabilities, for speed: without label smoothing a trained model gives most of
the vocabulary log-probabilities below log(2^-126) = -87.3, where exp's result is a subnormal float32, and the CPU
computes subnormals several times slower (2026, Xeon, 2 threads, ``[3000, 5332]``: 147 ms for ``exp`` when a
quarter of the results are subnormal, 18 ms when none is). The clamp comes after the loss is computed: such a p_v
becomes about 2^-126 instead of something smaller, and the gradient moves by less than 1.2e-38 per element.

:class:`_CompiledCrossEntropy` computes the same in C++ (``nmt/csrc/cross_entropy.cpp``), one pass per position for
the forward (keeping only its logsumexp) and one for the backward (the gradient from the logits); its exp clamps
its argument at -87 in the same way. The trainer uses it on the CPU where it builds (``train.compiled_loss``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from nmt.native import load_extension


@dataclass
class LossSums:
    """Sums over the non-pad tokens of a batch (divide by ``n_tokens`` for means)."""

    loss: Tensor  # scalar, label-smoothed
    nll: Tensor  # scalar, plain negative log-likelihood
    n_tokens: Tensor  # scalar, number of non-pad target tokens


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Per-position label-smoothed cross-entropy and NLL (module docstring): logits ``[positions, V]``, target
    ``[positions]``, mask ``[positions]`` bool (False: padding, loss and NLL 0) -> two ``[positions]`` tensors.
    Only the first is differentiable."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, target: Tensor, mask: Tensor, smoothing: float
    ) -> tuple[Tensor, Tensor]:
        log_probs = torch.log_softmax(logits, dim=-1)
        nll = (-log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)).masked_fill_(~mask, 0.0)
        loss = nll if smoothing == 0 else (1.0 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)
        loss = loss.masked_fill(~mask, 0.0)
        # the backward's exp is slow where its result would be subnormal (module docstring)
        log_probs.clamp_min_(math.log(torch.finfo(log_probs.dtype).tiny))
        ctx.save_for_backward(log_probs, target, mask)
        ctx.smoothing = smoothing
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_nll: Tensor | None) -> tuple[Tensor, None, None, None]:
        log_probs, target, mask = ctx.saved_tensors
        smoothing = ctx.smoothing
        g = grad_loss.masked_fill(~mask, 0.0).unsqueeze(-1)  # [positions, 1]
        probs = torch.exp(log_probs)
        # g * (p - eps / V) in one pass, written over p
        grad = torch.addcmul(g * (-smoothing / log_probs.size(-1)), probs, g, out=probs)
        grad.scatter_add_(-1, target.unsqueeze(-1), g * -(1.0 - smoothing))
        return grad, None, None, None


@functools.cache
def loss_extension() -> ModuleType | None:
    """The compiled loss (``nmt/csrc/cross_entropy.cpp``), built on first call; None where it cannot be built."""
    return load_extension("nmt_cross_entropy", "cross_entropy.cpp", "training uses the Python loss")


class _CompiledCrossEntropy(torch.autograd.Function):
    """:class:`_SmoothedCrossEntropy` compiled (module docstring): the same arguments and results, the logits
    ``[positions, V]`` contiguous float32 or float64 on the CPU."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, target: Tensor, mask: Tensor, smoothing: float
    ) -> tuple[Tensor, Tensor]:
        extension = loss_extension()
        assert extension is not None, "the compiled loss needs its extension: check loss_extension() first"
        loss, nll, log_totals = extension.cross_entropy_forward(logits, target, mask, smoothing)
        ctx.save_for_backward(logits, target, mask, log_totals)
        ctx.smoothing = smoothing
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_nll: Tensor | None) -> tuple[Tensor, None, None, None]:
        logits, target, mask, log_totals = ctx.saved_tensors
        grad = loss_extension().cross_entropy_backward(  # type: ignore[union-attr]
            grad_loss, logits, target, mask, log_totals, ctx.smoothing
        )
        return grad, None, None, None


def sequence_loss(
    logits: Tensor, target: Tensor, label_smoothing: float, pad_id: int, compiled: bool = False
) -> LossSums:
    """Label-smoothed cross-entropy.

    Args:
        logits: ``[batch, tgt_len, vocab]`` unnormalised scores.
        target: ``[batch, tgt_len]`` gold ids; ``pad_id`` positions are ignored.
        label_smoothing: eps in [0, 1).
        pad_id: the padding id.
        compiled: compute it with the compiled loss (:func:`loss_extension` must be built) where the logits are
            on the CPU; elsewhere the Python one.
    """
    mask = target.ne(pad_id)
    vocab = logits.size(-1)
    # bf16 logits (autocast) are scored in float32; float64 stays float64 (the gradient check)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    function = _CompiledCrossEntropy if compiled and logits.device.type == "cpu" else _SmoothedCrossEntropy
    loss, nll = function.apply(
        logits.reshape(-1, vocab).contiguous(), target.reshape(-1), mask.reshape(-1), label_smoothing
    )
    return LossSums(loss=loss.sum(), nll=nll.sum(), n_tokens=mask.sum())
