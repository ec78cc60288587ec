"""Attention: which source annotations the decoder looks at when it emits the next word.

Every mechanism splits its work in two: ``project_keys`` runs once per sentence on the encoder states (the
part of the score that does not depend on the decoder), ``forward`` runs at every decoder step:

    e_ij = score(s, h_j)                     for each source position j
    a_ij = exp(e_ij) / sum_k exp(e_ik)       softmax over the real (non-padding) positions only
    c_i  = sum_j a_ij h_j                    the context vector

A step may carry several queries per sentence (beam search: one per beam). The keys and annotations stay one
per sentence and every query of the sentence reads them, so the beams of a sentence share one copy of its
encoding and their contexts come out of one ``[beams, src_len] x [src_len, 2*hidden]`` product.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.config import AttentionType


class Attention(nn.Module):
    """Common interface; subclasses define ``project_keys`` and ``score``."""

    def project_keys(self, states: Tensor) -> Tensor:
        """Per-sentence part of the score: ``[batch, src_len, 2*hidden]`` -> keys ``[batch, src_len, key]``."""
        raise NotImplementedError

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised scores e_j: query ``[batch, group, query]``, keys ``[batch, src_len, key]`` ->
        ``[batch, group, src_len]``."""
        raise NotImplementedError

    def weights(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """The attention weights a_ij of one decoder step, grouped by sentence.

        Args:
            query: decoder state ``[batch * group, query_size]``: ``group`` consecutive rows per sentence (the
                beams of beam search; 1 in training and greedy search).
            keys: ``project_keys`` of the encoder states, ``[batch, src_len, key]``.
            mask: ``[batch, src_len]`` bool, True on real tokens (at least one per row).

        Returns:
            ``[batch, group, src_len]``: rows sum to 1 and are exactly 0 on padding.
        """
        batch, rows = keys.size(0), query.size(0)
        group = rows // batch if batch else 1
        if rows != batch * group:
            raise ValueError(f"{rows} query rows do not divide into the {batch} sentences of the keys")
        scores = self.score(query.view(batch, group, -1), keys)
        # -inf, not a large negative number: exp(-inf) is exactly 0 in every float type, bf16 included.
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attend over one batch of sentences for one decoder step: ``weights``, then the context.

        Args:
            query, keys, mask: as ``weights``.
            values: encoder states h_j ``[batch, src_len, 2*hidden]``.

        Returns:
            context ``[batch * group, 2*hidden]`` and weights ``[batch * group, src_len]``, rows in the query's
            order.
        """
        weights = self.weights(query, keys, mask)
        context = torch.bmm(weights, values)
        return context.view(query.size(0), -1), weights.view(query.size(0), -1)


class BahdanauAttention(Attention):
    """Additive attention: e_ij = v^T tanh(W s_{i-1} + U h_j) (Bahdanau et al., 2014, appendix A.1.2).

    U h_j (+ b) does not depend on the decoder, so it is the key, computed once per sentence; each step costs
    one ``[query -> attention]`` product plus the nonlinearity and v over the source positions. The paper omits
    biases from its equations for brevity; the one bias inside the tanh sits in the key layer, where it costs
    nothing per step (a bias on W would be redundant with it, and one on v cancels in the softmax).

    The score is computed in its sigmoid form. With tanh(x) = 2 sigmoid(2x) - 1,

        v^T tanh(W s + U h_j + b) = 2 v^T sigmoid(2 W s + 2 (U h_j + b)) - sum(v),

    and the last term is the same for every source position j, so the softmax cancels it: the weights are those
    of the paper's formula, and so are the parameters. The reason is speed: on CPUs torch's sigmoid costs about a
    sixth of its tanh (AVX-512, 2026: 0.42 against 2.73 ns per element), and this elementwise pass over
    ``[batch, beams, src_len, attention]`` was a fifth of beam search's time. The factor 2 is applied to the
    keys once per sentence and to the ``[rows, attention]`` query, never to the large tensor.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(key_size, attention_size)  # U, b
        self.query_layer = nn.Linear(query_size, attention_size, bias=False)  # W
        self.energy_layer = nn.Linear(attention_size, 1, bias=False)  # v

    def project_keys(self, states: Tensor) -> Tensor:
        """2 (U h_j + b): ``[batch, src_len, 2*hidden]`` -> ``[batch, src_len, attention]``."""
        return self.key_layer(states).mul_(2)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """v^T tanh(W s + U h_j + b) + sum(v), as 2 v^T sigmoid(2 W s + 2 (U h_j + b)) (class docstring):
        ``[batch, group, query]``, ``[batch, src_len, attention]`` -> ``[batch, group, src_len]``.

        The sum is a fresh ``[batch, group, src_len, attention]`` tensor, the largest of a step, so the sigmoid
        overwrites it instead of allocating a second one (its gradient needs only its output).
        """
        energies = (self.query_layer(query).mul_(2).unsqueeze(2) + keys.unsqueeze(1)).sigmoid_()
        return self.energy_layer(energies).squeeze(-1).mul_(2)


class MultiplicativeAttention(Attention):
    """Luong et al. (2015) ``general``: e_ij = s^T W h_j, and ``dot``: e_ij = s^T h_j.

    W h_j is the key, computed once per sentence, so a step costs one batched dot product. ``dot`` needs the
    query and the annotations to have the same size; when they differ (in Seq2Seq the decoder state has
    ``hidden_size`` units, the annotations ``2*enc_hidden_size``) the keys are projected once with a bias-free
    ``Linear(key -> query)``, which makes ``dot`` the same function class as ``general`` there. ``general``
    always has W.
    """

    def __init__(self, query_size: int, key_size: int, project: bool) -> None:
        super().__init__()
        self.key_layer = nn.Linear(key_size, query_size, bias=False) if project else None  # W

    def project_keys(self, states: Tensor) -> Tensor:
        """W h_j (or h_j itself): ``[batch, src_len, 2*hidden]`` -> ``[batch, src_len, query]``."""
        return states if self.key_layer is None else self.key_layer(states)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """s^T k_j: ``[batch, group, query]``, ``[batch, src_len, query]`` -> ``[batch, group, src_len]``."""
        # keys x query, not query x keys^T: with one query per sentence (training) this is the product it
        # always was, so the numbers do not move
        return torch.bmm(keys, query.transpose(1, 2)).transpose(1, 2)


def build_attention(kind: AttentionType, query_size: int, key_size: int, attention_size: int) -> Attention:
    """The attention named by ``kind``; ``attention_size`` is used by ``bahdanau`` only."""
    if kind == AttentionType.bahdanau:
        return BahdanauAttention(query_size, key_size, attention_size)
    if kind == AttentionType.general:
        return MultiplicativeAttention(query_size, key_size, project=True)
    if kind == AttentionType.dot:
        return MultiplicativeAttention(query_size, key_size, project=query_size != key_size)
    raise ValueError(f"unknown attention type {kind!r}")
