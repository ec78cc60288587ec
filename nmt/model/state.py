"""What the decoder carries between steps: the encoded sentence and the recurrent state.

Both are plain dataclasses so that search can treat them as opaque: ``index_select`` picks rows of the batch
(beam search uses it to expand each sentence to its beams and to reorder beams after each step).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


def _select(x: Tensor | None, dim: int, index: Tensor) -> Tensor | None:
    return None if x is None else x.index_select(dim, index)


@dataclass
class EncoderOutput:
    """The source side of a batch, computed once per sentence.

    ``states``: annotations h_j = [h_fwd_j; h_bwd_j] of the top encoder layer, ``[batch, src_len, 2*hidden]``
    (zeros on padding). ``mask``: ``[batch, src_len]`` bool, True on real tokens. ``keys``: the attention's
    projection of ``states`` (2 (U h_j + b) for Bahdanau attention), ``[batch, src_len, key_size]``. ``hidden``: final
    state of each encoder layer, [h_fwd_last; h_bwd_first], ``[enc_layers, batch, 2*hidden]``; ``cell``: the
    same for the LSTM memory cell, None for a GRU.
    """

    states: Tensor
    mask: Tensor
    keys: Tensor
    hidden: Tensor
    cell: Tensor | None = None

    def index_select(self, index: Tensor) -> EncoderOutput:
        """Rows ``index`` (``[n]``, long, on the states' device) of the batch; ``n`` may exceed batch."""
        return EncoderOutput(
            states=self.states.index_select(0, index),
            mask=self.mask.index_select(0, index),
            keys=self.keys.index_select(0, index),
            hidden=self.hidden.index_select(1, index),
            cell=_select(self.cell, 1, index),
        )


@dataclass
class DecoderState:
    """The decoder's recurrent state after step i.

    ``hidden``: s_i of every decoder layer, ``[dec_layers, batch, hidden]``; ``cell``: the LSTM memory cell,
    same shape, None for a GRU; ``input_feed``: h~_i, the previous attentional vector fed back by the Luong
    step, ``[batch, hidden]``, None for the Bahdanau step.
    """

    hidden: Tensor
    cell: Tensor | None = None
    input_feed: Tensor | None = None

    def index_select(self, index: Tensor) -> DecoderState:
        """Rows ``index`` (``[n]``, long) of the batch."""
        return DecoderState(
            hidden=self.hidden.index_select(1, index),
            cell=_select(self.cell, 1, index),
            input_feed=_select(self.input_feed, 0, index),
        )
