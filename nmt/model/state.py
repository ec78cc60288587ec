"""What the decoder carries between steps: the encoded sentence and the recurrent state.

All are plain dataclasses so that search can treat them as opaque: ``index_select`` picks rows of the batch
(beam search uses it to expand each sentence to its beams and to reorder beams after each step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from torch import Tensor

_Batch = TypeVar("_Batch", bound="_Rows")


class _Rows:
    """``index_select`` for a dataclass of tensors: every field (None stays None) along the dimension that
    ``batch_dims`` names for it."""

    batch_dims: ClassVar[dict[str, int]]

    def index_select(self: _Batch, index: Tensor) -> _Batch:
        """Rows ``index`` (``[n]``, long, on the tensors' device) of the batch; ``n`` may exceed batch."""
        picked = {
            name: None if (x := getattr(self, name)) is None else x.index_select(dim, index)
            for name, dim in self.batch_dims.items()
        }
        return dataclasses.replace(self, **picked)


@dataclass
class EncoderOutput(_Rows):
    """The source side of a batch, computed once per sentence.

    ``states``: annotations h_j = [h_fwd_j; h_bwd_j] of the top encoder layer, ``[batch, src_len, 2*hidden]``
    (zeros on padding). ``mask``: ``[batch, src_len]`` bool, True on real tokens. ``keys``: the attention's
    projection of ``states`` (2 (U h_j + b) for Bahdanau attention), ``[batch, src_len, key_size]``. ``hidden``: final
    state of each encoder layer, [h_fwd_last; h_bwd_first], ``[enc_layers, batch, 2*hidden]``; ``cell``: the
    same for the LSTM memory cell, None for a GRU.
    """

    batch_dims: ClassVar[dict[str, int]] = {"states": 0, "mask": 0, "keys": 0, "hidden": 1, "cell": 1}

    states: Tensor
    mask: Tensor
    keys: Tensor
    hidden: Tensor
    cell: Tensor | None = None


@dataclass
class FoldedEncoding(_Rows):
    """The source side of a batch as :class:`nmt.model.folded.FoldedModel` needs it: the annotations' products
    instead of the annotations.

    ``products``: P_j = W_ctx h_j, the part of the decoder's products that the context c_i = sum_j a_ij h_j
    enters through (so that W_ctx c_i = sum_j a_ij P_j), ``[batch, src_len, product]`` (zeros on padding).
    ``mask``, ``keys``, ``hidden``, ``cell``: as in :class:`EncoderOutput`.

    ``sentences``: None, or ``[n]`` long, the rows of ``products``, ``mask`` and ``keys`` that this encoding's n
    sentences are. Then ``index_select`` picks from ``sentences`` and leaves those three whole: nothing wide is
    copied when search drops finished sentences, and the compiled search step reads the rows through the index
    (``nmt.model.folded``). ``hidden`` and ``cell`` always hold the n sentences' own rows.
    """

    batch_dims: ClassVar[dict[str, int]] = {"products": 0, "mask": 0, "keys": 0, "hidden": 1, "cell": 1}

    products: Tensor
    mask: Tensor
    keys: Tensor
    hidden: Tensor
    cell: Tensor | None = None
    sentences: Tensor | None = None

    def index_select(self, index: Tensor) -> FoldedEncoding:
        """Sentences ``index`` (``[n]``, long): their rows of every field, or, with ``sentences``, their entries
        of it (and their rows of ``hidden`` and ``cell``)."""
        if self.sentences is None:
            return super().index_select(index)
        return dataclasses.replace(
            self,
            sentences=self.sentences.index_select(0, index),
            hidden=self.hidden.index_select(1, index),
            cell=None if self.cell is None else self.cell.index_select(1, index),
        )

    def own_rows(self) -> FoldedEncoding:
        """This encoding with ``products``, ``mask`` and ``keys`` holding just its sentences' rows, in order
        (itself when ``sentences`` is None)."""
        if self.sentences is None:
            return self
        index = self.sentences
        return dataclasses.replace(
            self,
            products=self.products.index_select(0, index),
            mask=self.mask.index_select(0, index),
            keys=self.keys.index_select(0, index),
            sentences=None,
        )


@dataclass
class DecoderState(_Rows):
    """The decoder's recurrent state after step i.

    ``hidden``: s_i of every decoder layer, ``[dec_layers, batch, hidden]``; ``cell``: the LSTM memory cell,
    same shape, None for a GRU; ``input_feed``: h~_i, the previous attentional vector fed back by the Luong
    step, ``[batch, hidden]``, None for the Bahdanau step.
    """

    batch_dims: ClassVar[dict[str, int]] = {"hidden": 1, "cell": 1, "input_feed": 0}

    hidden: Tensor
    cell: Tensor | None = None
    input_feed: Tensor | None = None
