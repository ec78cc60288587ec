"""Bidirectional RNN encoder (Bahdanau et al., 2014, section 3.2).

Each source token x_j is embedded and read by a forward and a backward RNN; its annotation is the
concatenation h_j = [h_fwd_j; h_bwd_j], so it summarises the words both before and after x_j.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig, RnnType
from nmt.model.dropout import Dropout
from nmt.vocab import PAD_ID


def encoder_size(cfg: ModelConfig) -> int:
    """Units per encoder direction: ``enc_hidden_size``, or half the decoder's ``hidden_size`` when that is 0,
    so that the annotations [h_fwd; h_bwd] are as wide as the decoder state."""
    return cfg.enc_hidden_size or max(1, cfg.hidden_size // 2)


def rnn_class(rnn_type: RnnType) -> type[nn.RNNBase]:
    """``nn.GRU`` or ``nn.LSTM``."""
    return nn.LSTM if rnn_type == RnnType.lstm else nn.GRU


class Encoder(nn.Module):
    """Embeddings -> dropout -> bidirectional GRU/LSTM (``num_layers`` deep, dropout between layers)."""

    def __init__(
        self,
        rnn_type: RnnType,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=PAD_ID)
        self.dropout = Dropout(dropout)
        self.rnn = rnn_class(rnn_type)(
            emb_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,  # nn.RNNBase warns on dropout with one layer
        )

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Encode a padded batch.

        Args:
            src: ``[batch, src_len]`` token ids, padded with PAD_ID.
            src_lengths: ``[batch]`` real lengths (each >= 1), any device.

        Returns:
            states ``[batch, src_len, 2*hidden]`` (top layer, zeros on padding), hidden
            ``[layers, batch, 2*hidden]`` = [h_fwd_last; h_bwd_first] per layer, and the LSTM cell state in the
            same layout (None for a GRU).
        """
        emb = self.dropout(self.embedding(src))
        # Packing makes the backward RNN start at each sentence's last real token instead of at padding.
        # It needs the lengths on the CPU: one small copy per batch.
        packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        if isinstance(final, tuple):
            return states, self._join_directions(final[0]), self._join_directions(final[1])
        return states, self._join_directions(final), None

    def _join_directions(self, final: Tensor) -> Tensor:
        """``[layers*2, batch, hidden]`` (layer-major, forward first) -> ``[layers, batch, 2*hidden]``."""
        fwd_bwd = final.view(self.num_layers, 2, final.size(1), self.hidden_size)
        return torch.cat([fwd_bwd[:, 0], fwd_bwd[:, 1]], dim=-1)
