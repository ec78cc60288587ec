"""Ensembles of models that share a target vocabulary, behind the same encode / decode_step protocol as
:class:`~nmt.model.seq2seq.Seq2Seq`, so search drives them unchanged.

At each step the members' next-token distributions are averaged: ``log p(y) = log (1/K sum_k p_k(y))``, computed
as a logsumexp of the members' log-probabilities. The attention returned is the members' mean (for plots).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class EnsembleState:
    """One encoder output or decoder state per member; reordered together."""

    parts: list[Any]

    def index_select(self, index: Tensor) -> EnsembleState:
        return EnsembleState([part.index_select(index) for part in self.parts])


class Ensemble(nn.Module):
    """Average of ``members`` (each a Seq2Seq over the same target vocabulary)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def encode(self, src: Tensor, src_lengths: Tensor) -> EnsembleState:
        """``src`` [batch, src_len], ``src_lengths`` [batch] → one EncoderOutput per member."""
        return EnsembleState([member.encode(src, src_lengths) for member in self.members])

    def init_decoder_state(self, enc: EnsembleState) -> EnsembleState:
        return EnsembleState([m.init_decoder_state(e) for m, e in zip(self.members, enc.parts)])

    def decode_step(
        self, prev_tokens: Tensor, state: EnsembleState, enc: EnsembleState
    ) -> tuple[Tensor, EnsembleState, Tensor]:
        """``prev_tokens`` [batch] → mixture log-probs [batch, vocab], new states, mean attention [batch, src_len]."""
        outputs = [m.decode_step(prev_tokens, s, e) for m, s, e in zip(self.members, state.parts, enc.parts)]
        log_probs = torch.logsumexp(torch.stack([o[0] for o in outputs]), dim=0) - math.log(len(outputs))
        attention = torch.stack([o[2] for o in outputs]).mean(dim=0)
        return log_probs, EnsembleState([o[1] for o in outputs]), attention
