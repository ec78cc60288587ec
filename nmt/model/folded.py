"""A trained model with its decoder folded for search: the function of ``Decoder.step``, with fewer products.

Two shares of a step's input products need not be computed at every step.

* **The target embedding's share.** E y_{i-1} takes one of |V| values, so its products are a table computed once,
  from the weights, and looked up per step. Bahdanau step (module docstring of ``nmt.model.decoder``): the first
  cell's W_ih [E y; c] + b_ih and the pre-output's W_o [E y; s; c] + b_o give

      T[y] = [W_ie E_y + b_ih ; W_oe E_y + b_o]                        [tgt_vocab, gates*hidden + hidden]

  (W_ie, W_oe: the columns that multiply E y). Luong step: the cell's input is [E y; h~], so T[y] = W_ie E_y + b_ih.
* **The context's share.** c_i = sum_j a_ij h_j, so W c_i = sum_j a_ij (W h_j): the annotations' products P_j =
  W_ctx h_j are one GEMM per sentence (``encode``, beside the attention keys), and a step mixes them with its
  attention weights, a ``[beams, src_len] x [src_len, product]`` product per sentence, instead of a
  ``[rows, 2*enc_hidden] x [2*enc_hidden, product]`` one. The context itself is never formed. Bahdanau:
  W_ctx = [W_ic ; W_oc] (the cell's and the pre-output's context columns); Luong: W_ctx = W_cc, the pre-output's.

A Bahdanau step is then (dropout is off: search runs in eval mode)

      a_i = attention(s_{i-1}, h)                                      [rows, src_len]
      [g_i ; o_i] = T[y_{i-1}] + sum_j a_ij P_j                        one ``baddbmm``
      s_i = cell(g_i, W_hh s_{i-1} + b_hh)                             the first cell's gate arithmetic
      t_i = tanh(o_i + W_os s_i)

and what is left of its products: the query's, W_hh s, W_os s, the upper layers' cells and the output layer. In
the default shape (embeddings, state and annotations of 256, attention 128) a row's multiply-adds outside the
output layer fall from 819k to 295k plus src_len x 1,024 for the mixing (336k at 40 source pieces). The sums
run in another order than the reference's, so the numbers agree to float rounding, not bit for bit: the tests
check the same hypotheses on a trained model.

The tables and the new layers are copies made by :func:`fold`: fold a model after its weights are final. They
are ordinary ``nn.Linear`` layers and buffers, so int8 quantization (``nmt.translate.quantize_int8``) applies to
a folded model as to any other; the tables stay in float. ``Translator`` folds float models only: int8 makes the
products that folding removes cheap already, and an int8 model ran faster unfolded (README, speed section).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import DecoderStep
from nmt.model.attention import BahdanauAttention
from nmt.model.compiled_loops import loops_extension, outside_compiled
from nmt.model.ensemble import Ensemble
from nmt.model.seq2seq import Seq2Seq
from nmt.model.state import DecoderState, FoldedEncoding


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` ``[out, in]`` and ``bias`` ``[out]`` (or none)."""
    layer = nn.Linear(
        weight.size(1), weight.size(0), bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class FoldedModel(nn.Module):
    """``model`` behind the decoding protocol (``encode``, ``init_decoder_state``, ``decode_step``) with its
    decoder's input products folded (module docstring). ``model`` keeps its encoder, attention, bridge, upper
    cells and output layer, which this class calls; its first cell and pre-output are replaced by:

    ``tables`` ``[tgt_vocab, table]``: T[y]; ``context_product``: W_ctx ``[2*enc_hidden -> product]``;
    ``hidden_product``: the first cell's W_hh s + b_hh; ``state_pre_output``: W_os s (Bahdanau) or W_cs s + b_c
    (Luong); ``feed_product``: the Luong cell's W_if h~ (None for Bahdanau).

    ``compiled``: a Bahdanau step with additive attention attends and mixes in one compiled pass per row
    (``search_attend``, ``nmt/csrc/rnn_loops.cpp``) when its tensors are float32/64 on the CPU, where the
    extension can be built (``compiled_attention`` says whether it was); otherwise, and for every other model, the
    eager step, which is the reference.
    """

    def __init__(self, model: Seq2Seq, compiled: bool = False) -> None:
        super().__init__()
        self.model = model
        decoder = model.decoder
        emb, hid = decoder.embedding.embedding_dim, decoder.hidden_size
        first, pre = decoder.cells[0], decoder.pre_output
        luong = model.cfg.decoder_step == DecoderStep.luong
        with torch.no_grad():
            embeddings = decoder.embedding.weight
            cell_table = F.linear(embeddings, first.weight_ih[:, :emb], first.bias_ih)
            if luong:  # pre-output W_c [s; c] + b_c
                tables = cell_table
                context_weight = pre.weight[:, hid:]
                self.state_pre_output = _linear(pre.weight[:, :hid], pre.bias)
                self.feed_product: nn.Linear | None = _linear(first.weight_ih[:, emb:], None)
            else:  # pre-output W_o [E y; s; c] + b_o
                tables = torch.cat([cell_table, F.linear(embeddings, pre.weight[:, :emb], pre.bias)], dim=-1)
                context_weight = torch.cat([first.weight_ih[:, emb:], pre.weight[:, emb + hid :]])
                self.state_pre_output = _linear(pre.weight[:, emb : emb + hid], None)
                self.feed_product = None
        self.register_buffer("tables", tables.clone())
        self.context_product = _linear(context_weight, None)
        self.hidden_product = _linear(first.weight_hh, first.bias_hh)
        self.gate_width = first.weight_ih.size(0)  # gates * hidden
        self._step = self._luong_step if luong else self._bahdanau_step
        # the compiled attention and mixing of a Bahdanau step with additive attention (``compiled``), on the CPU
        # (buffers, not new layers: a layer's initialisation would draw from the random stream that training's
        # dropout continues after a validation)
        self.compiled_attention = False
        self.doubled_query: Tensor | None
        self.doubled_v: Tensor | None
        self.register_buffer("doubled_query", None)
        self.register_buffer("doubled_v", None)
        attention = decoder.attention
        if compiled and not luong and isinstance(attention, BahdanauAttention):
            self.compiled_attention = loops_extension() is not None
            with torch.no_grad():  # the score's sigmoid form (nmt.model.attention): 2 W_q and 2 v
                self.doubled_query = 2 * attention.query_layer.weight
                self.doubled_v = 2 * attention.energy_layer.weight[0]

    @property
    def output_layer(self) -> nn.Module:
        """W_out, b_out: ``[..., hidden]`` -> ``[..., tgt_vocab]``."""
        return self.model.decoder.output

    def encode(self, src: Tensor, src_lengths: Tensor) -> FoldedEncoding:
        """``Seq2Seq.encode``, then P = W_ctx h: ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``. For the
        compiled step, an encoding with ``sentences`` (``FoldedEncoding``): dropping finished sentences copies
        nothing wide."""
        enc = self.model.encode(src, src_lengths)
        products = self.context_product(enc.states)
        indexed = self.compiled_attention and not outside_compiled(products)
        return FoldedEncoding(
            products=products,
            mask=enc.mask,
            keys=enc.keys,
            hidden=enc.hidden,
            cell=enc.cell,
            sentences=torch.arange(src.size(0), device=src.device) if indexed else None,
        )

    def init_decoder_state(self, enc: FoldedEncoding) -> DecoderState:
        """``Seq2Seq.init_decoder_state``: the bridge from the encoder's final states."""
        return self.model.decoder.init_state(enc)

    def decode_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: FoldedEncoding
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """``Seq2Seq.decode_step``: ``prev_tokens`` ``[rows]`` -> log-probs ``[rows, tgt_vocab]``, the new state,
        attention weights ``[rows, src_len]``."""
        logits, state, weights = self.decode_step_logits(prev_tokens, state, enc)
        return torch.log_softmax(logits, dim=-1), state, weights

    def decode_step_logits(
        self, prev_tokens: Tensor, state: DecoderState, enc: FoldedEncoding
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """``decode_step`` before its ``log_softmax``: logits ``[rows, tgt_vocab]``, the new state, attention
        weights ``[rows, src_len]``."""
        pre_output, state, weights = self.pre_output_step(prev_tokens, state, enc)
        return self.output_layer(pre_output), state, weights

    def pre_output_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: FoldedEncoding
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """``Decoder.step`` on ``prev_tokens`` ``[rows]``: pre-output ``[rows, hidden]``, the new state, attention
        weights ``[rows, src_len]``."""
        return self._step(prev_tokens, state, enc)

    def _bahdanau_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: FoldedEncoding
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """Attend with s_{i-1}, then T[y] + a P, then the cells and the pre-output."""
        if self.compiled_attention and not outside_compiled(enc.products):
            weights, mixed = self._attend_and_mix_compiled(prev_tokens, state.hidden[-1], enc)
        else:
            weights, mixed = self._attend_and_mix(prev_tokens, state.hidden[-1], enc)
        gates_in, pre_in = mixed.split([self.gate_width, mixed.size(1) - self.gate_width], dim=-1)
        hidden, cell = self.model.decoder.recur_from_gates(
            gates_in, self.hidden_product(state.hidden[0]), state
        )
        pre_output = torch.tanh(pre_in + self.state_pre_output(hidden[-1]))
        return pre_output, DecoderState(hidden, cell), weights

    def _attend_and_mix(
        self, prev_tokens: Tensor, query: Tensor, enc: FoldedEncoding
    ) -> tuple[Tensor, Tensor]:
        """a_i = attention(s_{i-1}, h) ``[rows, src_len]`` and [g_i ; o_i] = T[y_{i-1}] + sum_j a_ij P_j ``[rows,
        table]``, from ``prev_tokens`` ``[rows]`` and the query s_{i-1} ``[rows, hidden]``: the reference."""
        rows, enc = prev_tokens.size(0), enc.own_rows()
        weights = self.model.decoder.attention.weights(query, enc.keys, enc.mask)
        batch, group, _ = weights.shape
        mixed = torch.baddbmm(self.tables[prev_tokens].view(batch, group, -1), weights, enc.products)
        return weights.view(rows, -1), mixed.view(rows, -1)

    def _attend_and_mix_compiled(
        self, prev_tokens: Tensor, query: Tensor, enc: FoldedEncoding
    ) -> tuple[Tensor, Tensor]:
        """``_attend_and_mix`` in one compiled pass per row (``search_attend`` in ``nmt/csrc/rnn_loops.cpp``):
        additive attention only, with the query layer and v doubled once here (the score's sigmoid form)."""
        extension = loops_extension()
        assert extension is not None and self.doubled_query is not None and self.doubled_v is not None
        sentences = enc.sentences
        if sentences is None:
            sentences = torch.arange(enc.products.size(0), device=enc.products.device)
        return extension.search_attend(
            F.linear(query, self.doubled_query),
            enc.keys,
            enc.products,
            enc.mask.logical_not(),
            sentences,
            self.doubled_v,
            self.tables,
            prev_tokens.contiguous(),
        )

    def _luong_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: FoldedEncoding
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """The cells on T[y] + W_if h~_{i-1}, then attend with s_i, then h~_i = tanh(W_cs s_i + b_c + a P)."""
        assert self.feed_product is not None and state.input_feed is not None
        rows, enc = prev_tokens.size(0), enc.own_rows()
        gates_in = self.tables[prev_tokens] + self.feed_product(state.input_feed)
        hidden, cell = self.model.decoder.recur_from_gates(
            gates_in, self.hidden_product(state.hidden[0]), state
        )
        weights = self.model.decoder.attention.weights(hidden[-1], enc.keys, enc.mask)
        batch, group, _ = weights.shape
        state_part = self.state_pre_output(hidden[-1]).view(batch, group, -1)
        h_tilde = torch.tanh(torch.baddbmm(state_part, weights, enc.products)).view(rows, -1)
        return h_tilde, DecoderState(hidden, cell, h_tilde), weights.view(rows, -1)


def fold(model: nn.Module, compiled: bool = False) -> nn.Module:
    """``model`` folded for search: a :class:`FoldedModel` of a Seq2Seq, an ensemble of folded members; any
    other model unchanged. Put ``model`` in eval mode first: the folded step has no dropout. ``compiled``: steps
    on the CPU attend and mix in compiled code where it applies (:class:`FoldedModel`)."""
    if isinstance(model, Ensemble):
        return Ensemble([fold(member, compiled) for member in model.members])
    if isinstance(model, Seq2Seq):
        return FoldedModel(model, compiled).eval()
    return model
