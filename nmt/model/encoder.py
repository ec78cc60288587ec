"""Bidirectional RNN encoder (Bahdanau et al., 2014, section 3.2).

Each source token x_j is embedded and read by a forward and a backward RNN; its annotation is the
concatenation h_j = [h_fwd_j; h_bwd_j], so it summarises the words both before and after x_j.

A padded batch must not let padding reach a real annotation: the backward RNN has to start at each sentence's
last real token. Two ways give the same result:

- **packed** (``pack_padded_sequence``): the RNN runs on the real tokens only. Any RNN module takes it (LSTM,
  int8-quantized, cuDNN), but on the CPU its backward pass fills and adds a whole ``[tokens, 3*hidden]``
  gradient at every time step;
- **unpacked** (float GRU on the CPU): the forward direction runs over the padded batch (padding comes after
  the real tokens, so it changes nothing before it), the backward direction over each sentence reversed within
  its length (padding stays at the end); the final states are read at the last real position. A GRU's output
  is its state, so they can be; an LSTM's cell state cannot, so the LSTM stays packed. Encoder forward +
  backward on a 2-core Xeon (2026-12-05, 256-wide embeddings, 128 units per direction): 56 -> 37 ms for
  40 x 37 tokens, 72 -> 54 ms for 8 x 115, 37 -> 32 ms for 90 x 16.

``compile_loop`` runs the unpacked layers' two directions through ``nmt.model.compiled_loops.BiGruLoop`` (both
directions stepped together in C++, a hand-written backward) instead of two ``torch.gru`` calls, on the CPU in
float32 and float64; ``torch.gru`` stays the reference and the fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.config import ModelConfig, RnnType
from nmt.model.compiled_loops import BiGruLoop, loops_extension, outside_compiled
from nmt.model.dropout import Dropout, dropout
from nmt.vocab import PAD_ID


def encoder_size(cfg: ModelConfig) -> int:
    """Units per encoder direction: ``enc_hidden_size``, or half the decoder's ``hidden_size`` when that is 0,
    so that the annotations [h_fwd; h_bwd] are as wide as the decoder state."""
    return cfg.enc_hidden_size or max(1, cfg.hidden_size // 2)


def lengths_to_mask(lengths: Tensor, max_len: int, device: torch.device) -> Tensor:
    """``[batch]`` lengths -> ``[batch, max_len]`` bool on ``device``, True on the first ``length`` positions."""
    return torch.arange(max_len, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


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
        self._directions = self._directions_of_torch_gru

    def compile_loop(self) -> str:
        """Run the unpacked layers (module docstring) through the compiled loop from now on, where this encoder is
        a GRU and the extension builds. Returns which loop runs, and why, for the training log."""
        if type(self.rnn) is not nn.GRU:
            return "torch's (the compiled loop covers a GRU encoder)"
        if loops_extension() is None:
            return "torch's (the C++ extension could not be built: see the warning above)"
        self._directions = self._directions_compiled
        return "compiled"

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
        if type(self.rnn) is nn.GRU and emb.device.type == "cpu":  # not LSTMs, int8: see the module doc
            states, hidden = self.encode_unpacked(emb, src_lengths)
            return states, hidden, None
        return self.encode_packed(emb, src_lengths)

    def encode_packed(self, emb: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """``forward`` from embeddings ``[batch, src_len, emb]``, through ``pack_padded_sequence``."""
        # pack_padded_sequence needs the lengths on the CPU: one small copy per batch.
        packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=emb.size(1))
        if isinstance(final, tuple):
            return states, self._join_directions(final[0]), self._join_directions(final[1])
        return states, self._join_directions(final), None

    def encode_unpacked(self, emb: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``forward`` of a float GRU from embeddings ``[batch, src_len, emb]``, without packing: returns the
        states ``[batch, src_len, 2*hidden]`` (zeros on padding) and hidden ``[layers, batch, 2*hidden]``."""
        batch, src_len, _ = emb.shape
        real = lengths_to_mask(src_lengths, src_len, emb.device)  # [batch, src_len]
        lengths = src_lengths.to(emb.device)[:, None]  # [batch, 1]
        positions = torch.arange(src_len, device=emb.device)
        # Position j of a sentence of length n reads position n-1-j; padding stays where it is. Applying the
        # index twice gives back the original order.
        reverse_index = torch.where(real, lengths - 1 - positions, positions)
        rows, last = torch.arange(batch, device=emb.device), lengths[:, 0] - 1
        layer_input, finals = emb, []
        for layer in range(self.num_layers):
            if layer > 0:
                layer_input = dropout(layer_input, self.rnn.dropout, self.training)
            fwd, bwd = self._directions(layer_input, reverse_index, layer)
            finals.append(torch.cat([fwd[rows, last], bwd[:, 0]], dim=-1))
            layer_input = torch.cat([fwd, bwd], dim=-1)
        return layer_input.masked_fill(~real[:, :, None], 0.0), torch.stack(finals)

    def _directions_of_torch_gru(
        self, layer_input: Tensor, reverse_index: Tensor, layer: int
    ) -> tuple[Tensor, Tensor]:
        """Layer ``layer``'s forward and backward states ``[batch, src_len, hidden]`` each, in source order, from
        ``layer_input`` ``[batch, src_len, in]``: one ``torch.gru`` call per direction, the backward one over
        the input reversed by ``reverse_index`` (``encode_unpacked``)."""
        fwd = self._run_direction(layer_input, f"_l{layer}")
        reversed_input = _gather_steps(layer_input, reverse_index)
        return fwd, _gather_steps(self._run_direction(reversed_input, f"_l{layer}_reverse"), reverse_index)

    def _directions_compiled(
        self, layer_input: Tensor, reverse_index: Tensor, layer: int
    ) -> tuple[Tensor, Tensor]:
        """``_directions_of_torch_gru`` through ``BiGruLoop``: the input products of both directions as one GEMM
        (reversing commutes with a per-position product), then both recurrences stepped together."""
        if outside_compiled(layer_input):
            return self._directions_of_torch_gru(layer_input, reverse_index, layer)
        rnn, suffixes = self.rnn, (f"_l{layer}", f"_l{layer}_reverse")
        weight_ih, weight_hh, bias_ih, bias_hh = (
            [getattr(rnn, name + suffix) for suffix in suffixes]
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        products = F.linear(layer_input, torch.cat(weight_ih), torch.cat(bias_ih))  # [batch, src_len, 2*3h]
        fwd_in, bwd_in = products.chunk(2, dim=-1)
        gates_in = torch.stack([fwd_in, _gather_steps(bwd_in, reverse_index)])  # [2, batch, src_len, 3h]
        states = BiGruLoop.apply(
            gates_in.permute(2, 0, 1, 3).contiguous(), torch.stack(weight_hh), torch.stack(bias_hh)
        )  # [src_len, 2, batch, hidden]
        return states[:, 0].transpose(0, 1), _gather_steps(states[:, 1].transpose(0, 1), reverse_index)

    def _run_direction(self, steps: Tensor, suffix: str) -> Tensor:
        """One direction of one layer of ``self.rnn`` (its parameters ``*{suffix}``) over ``steps``
        ``[batch, src_len, in]`` from a zero state -> outputs ``[batch, src_len, hidden]``."""
        weights = [
            getattr(self.rnn, name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        initial = steps.new_zeros(1, steps.size(0), self.hidden_size)
        # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        outputs, _ = torch.gru(steps, initial, weights, True, 1, 0.0, self.training, False, True)
        return outputs

    def _join_directions(self, final: Tensor) -> Tensor:
        """``[layers*2, batch, hidden]`` (layer-major, forward first) -> ``[layers, batch, 2*hidden]``."""
        fwd_bwd = final.view(self.num_layers, 2, final.size(1), self.hidden_size)
        return torch.cat([fwd_bwd[:, 0], fwd_bwd[:, 1]], dim=-1)


def _gather_steps(steps: Tensor, index: Tensor) -> Tensor:
    """``steps[b, index[b, t]]`` for ``steps`` ``[batch, src_len, features]`` and ``index`` ``[batch, src_len]``."""
    return steps.gather(1, index[:, :, None].expand(-1, -1, steps.size(2)))
