"""Label-smoothed cross-entropy over the non-pad target tokens.

With smoothing eps and vocabulary V, the target distribution is ``q = (1 - eps) * onehot(y) + eps / V``, so

    loss = -sum_t sum_v q_v log p_v = (1 - eps) * NLL + eps * mean_v(-log p_v)

summed over non-pad positions. One ``log_softmax`` serves both terms, and the NLL is returned too, so
perplexity reports the model, not the smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LossSums:
    """Sums over the non-pad tokens of a batch (divide by ``n_tokens`` for means)."""

    loss: Tensor  # scalar, label-smoothed
    nll: Tensor  # scalar, plain negative log-likelihood
    n_tokens: Tensor  # scalar, number of non-pad target tokens


def sequence_loss(logits: Tensor, target: Tensor, label_smoothing: float, pad_id: int) -> LossSums:
    """Label-smoothed cross-entropy.

    Args:
        logits: ``[batch, tgt_len, vocab]`` unnormalised scores.
        target: ``[batch, tgt_len]`` gold ids; ``pad_id`` positions are ignored.
        label_smoothing: eps in [0, 1).
        pad_id: the padding id.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = target.ne(pad_id)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    nll_sum = nll.masked_fill(~mask, 0.0).sum()
    if label_smoothing > 0:
        uniform = -log_probs.mean(dim=-1).masked_fill(~mask, 0.0).sum()
        loss = (1.0 - label_smoothing) * nll_sum + label_smoothing * uniform
    else:
        loss = nll_sum
    return LossSums(loss=loss, nll=nll_sum, n_tokens=mask.sum())
