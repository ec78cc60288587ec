"""Attentional RNN decoder: one target word per step, two published step orders.

``bahdanau`` (Bahdanau et al., 2014, appendix A.2.2), attend *before* the recurrence:

    c_i = attention(s_{i-1}, h)                       query: the previous state (top layer)
    s_i = RNN([E y_{i-1}; c_i], s_{i-1})
    t_i = tanh(W_o [E y_{i-1}; s_i; c_i] + b_o)        pre-output (the paper's deep output uses maxout;
                                                      tanh is the cheaper stand-in)

``luong`` (Luong et al., 2015, section 3.3, with input feeding), attend *after* the recurrence:

    s_i  = RNN([E y_{i-1}; h~_{i-1}], s_{i-1})         h~_0 = 0
    c_i  = attention(s_i, h)
    h~_i = tanh(W_c [s_i; c_i] + b_c)                  pre-output, and fed back at the next step

Both end with p(y_i | y_<i, x) = softmax(W_out dropout(t_i) + b_out). The pre-output has ``hidden_size`` units
in both steps, so tying W_out to the target embedding needs ``emb_size == hidden_size``. Dropout (one rate,
``cfg.dropout``) sits on the target embeddings, between stacked cells, on [s_i; c_i] where it enters the
pre-output layer, and on the pre-output before W_out.

The recurrence runs on ``nn.GRUCell``/``nn.LSTMCell`` (one per layer, dropout between layers). ``step`` is the
reference, one call per output token; search runs its folded form (``nmt.model.folded``: per-piece tables and
per-sentence products of the annotations instead of the embedding's and the context's products at every step),
checked against it. Teacher-forced ``forward`` (training) computes the same function, but keeps in its loop
only what depends on the recurrence:

* the target embeddings, and their half of the first cell's input product, W_ih [E y; c] = W_e E y + W_c c, are
  one ``[batch*tgt_len, emb] x [emb, gates*hidden]`` GEMM before the loop (in ``forward``); the loop adds
  W_c c and runs the first cell's gate arithmetic itself (``_gru_gates``/``_lstm_gates``, the formulas of
  ``nn.GRUCell``/``nn.LSTMCell``);
* the Bahdanau pre-output t_i does not feed back, so it is one GEMM over all positions after the loop;
* the output projection is one GEMM after the loop (both step orders).

Fewer, larger GEMMs run faster on the CPU, and their weight gradients are one product each instead of one per
target position. The loop has no host synchronisation.

``compile_loop`` swaps the loop of a one-layer GRU decoder with additive attention (the default model, and the
peers' shape with the Luong step) for its compiled form (``nmt.model.compiled_loops``: the same operations in C++,
a hand-written backward), used on the CPU in float32 and float64; the Python loops stay the reference and the
fallback. The Luong loop's dropout masks are drawn for all positions before it, so a run with dropout draws
other masks than the Python loop would (the same distribution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import DecoderStep, ModelConfig, RnnType
from nmt.model.attention import BahdanauAttention, build_attention
from nmt.model.compiled_loops import BahdanauGruLoop, LuongGruLoop, loops_extension, outside_compiled
from nmt.model.dropout import Dropout
from nmt.model.encoder import encoder_size
from nmt.model.state import DecoderState, EncoderOutput, FoldedEncoding
from nmt.vocab import PAD_ID


def _stack(layers: list[Tensor]) -> Tensor:
    """Per-layer ``[batch, hidden]`` -> ``[layers, batch, hidden]`` (a view for one layer)."""
    return layers[0].unsqueeze(0) if len(layers) == 1 else torch.stack(layers)


def _zero_feed(zeros: Tensor) -> Tensor:
    """The Luong step's h~_0 = 0 ``[batch, hidden]``, from zeros ``[layers, batch, hidden]``."""
    return zeros[0]


def _no_feed(zeros: Tensor) -> None:
    """The Bahdanau step feeds nothing back."""
    return None


class Decoder(nn.Module):
    """Target embeddings, bridge, attention, recurrent cells, pre-output and output projection."""

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        emb, hid = cfg.emb_size, cfg.hidden_size
        annotation = 2 * encoder_size(cfg)  # bidirectional encoder states
        self.hidden_size = hid
        self.num_layers = cfg.dec_layers
        self.is_lstm = cfg.rnn_type == RnnType.lstm
        input_feeding = cfg.decoder_step == DecoderStep.luong
        # The step order is fixed for the model's life: pick its step, its teacher-forced loop and its h~_0 once,
        # not at every call.
        self._step = self._luong_step if input_feeding else self._bahdanau_step
        self._teacher_forced = self._luong_teacher_forced if input_feeding else self._bahdanau_teacher_forced
        self._initial_feed = _zero_feed if input_feeding else _no_feed

        self.embedding = nn.Embedding(vocab_size, emb, padding_idx=PAD_ID)
        self.dropout = Dropout(cfg.dropout)
        self.attention = build_attention(cfg.attention, hid, annotation, cfg.attention_size)

        # Decoder layer l starts from encoder layer l + (enc_layers - dec_layers), clamped at 0: the top layers
        # are aligned when the depths differ.
        self.bridge_from = [
            max(0, layer + cfg.enc_layers - cfg.dec_layers) for layer in range(cfg.dec_layers)
        ]
        self.bridge = (
            nn.ModuleList([nn.Linear(annotation, hid) for _ in self.bridge_from]) if cfg.bridge else None
        )
        self.cell_bridge = (
            nn.ModuleList([nn.Linear(annotation, hid) for _ in self.bridge_from])
            if cfg.bridge and self.is_lstm
            else None
        )

        cell = nn.LSTMCell if self.is_lstm else nn.GRUCell
        feed = hid if input_feeding else annotation  # h~_{i-1} or c_i next to E y_{i-1}
        self.cells = nn.ModuleList(
            [cell(emb + feed if layer == 0 else hid, hid) for layer in range(cfg.dec_layers)]
        )
        self._first_gates = _lstm_gates if self.is_lstm else _gru_gates
        pre_in = hid + annotation if input_feeding else emb + hid + annotation
        self.pre_output = nn.Linear(pre_in, hid)  # W_c (luong) or W_o (bahdanau)

        self.output = nn.Linear(hid, vocab_size)
        if cfg.tie_embeddings:  # ModelConfig checks emb_size == hidden_size, the pre-output's width
            self.output.weight = self.embedding.weight

    def compile_loop(self) -> str:
        """Run teacher forcing through the compiled loop of this decoder's step order (module docstring) from now
        on, where the decoder is one it computes: a one-layer GRU with additive attention. Builds the extension
        on first use. Returns which loop teacher forcing runs, and why, for the training log."""
        if self.is_lstm or self.num_layers != 1 or not isinstance(self.attention, BahdanauAttention):
            return "the Python loop (the compiled one covers a one-layer GRU with additive attention)"
        if loops_extension() is None:
            return "the Python loop (the C++ extension could not be built: see the warning above)"
        self._teacher_forced = (
            self._bahdanau_teacher_forced_compiled
            if self._initial_feed is _no_feed
            else self._luong_teacher_forced_compiled
        )
        return "compiled"

    def _attention_inputs(self, enc: EncoderOutput) -> tuple[Tensor, ...]:
        """The compiled loops' attention arguments: keys, annotations, padding, and W_q and v doubled (the
        score's sigmoid form, ``nmt.model.attention``)."""
        attention = self.attention
        assert isinstance(attention, BahdanauAttention)  # compile_loop checked
        return (
            enc.keys,
            enc.states,
            ~enc.mask,
            attention.query_layer.weight * 2,
            attention.energy_layer.weight.view(-1) * 2,
        )

    def embed(self, tokens: Tensor) -> Tensor:
        """E y with dropout: ``[batch]`` or ``[batch, tgt_len]`` ids -> ``[..., emb]``."""
        return self.dropout(self.embedding(tokens))

    def init_state(self, enc: EncoderOutput | FoldedEncoding) -> DecoderState:
        """s_0 = tanh(W_l [h_fwd_last; h_bwd_first] + b_l) per layer l (zeros without a bridge), from the encoder's
        final states ``enc.hidden`` (and ``enc.cell``).

        Returns a state with ``hidden`` (and ``cell`` for an LSTM) ``[dec_layers, batch, hidden]`` and, for the
        Luong step, ``input_feed`` h~_0 = 0 ``[batch, hidden]``.
        """
        batch = enc.hidden.size(1)
        zeros = enc.hidden.new_zeros(self.num_layers, batch, self.hidden_size)
        hidden = zeros if self.bridge is None else self._bridge(self.bridge, enc.hidden)
        cell = None
        if self.is_lstm:
            assert enc.cell is not None, "an LSTM decoder needs an LSTM encoder's cell state"
            cell = zeros if self.cell_bridge is None else self._bridge(self.cell_bridge, enc.cell)
        return DecoderState(hidden=hidden, cell=cell, input_feed=self._initial_feed(zeros))

    def _bridge(self, layers: nn.ModuleList, final: Tensor) -> Tensor:
        """``[enc_layers, batch, 2*enc_hidden]`` -> ``[dec_layers, batch, hidden]``."""
        return _stack([torch.tanh(lin(final[src])) for lin, src in zip(layers, self.bridge_from)])

    def step(
        self, emb: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoder step, in the order the config chose at construction (``_bahdanau_step`` or ``_luong_step``).

        Args:
            emb: E y_{i-1} from ``embed``, ``[rows, emb]``.
            state: the state after step i-1, ``rows`` rows.
            enc: the encoded sentences; ``rows`` is a multiple of their number, the rows of a sentence
                consecutive (its beams in beam search: they share one copy of the encoding).

        Returns:
            pre-output ``[rows, hidden]``, the state after step i, attention weights ``[rows, src_len]``.
        """
        return self._step(emb, state, enc)

    def _bahdanau_step(
        self, emb: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """Attend, then recur: the query is the previous top-layer state."""
        # c_i = attention(s_{i-1}, h)
        context, weights = self.attention(state.hidden[-1], enc.keys, enc.states, enc.mask)
        # s_i = RNN([E y_{i-1}; c_i], s_{i-1})
        hidden, cell = self._recur(torch.cat([emb, context], dim=-1), state)
        return self._bahdanau_pre_output(emb, hidden[-1], context), DecoderState(hidden, cell), weights

    def _bahdanau_pre_output(self, emb: Tensor, top: Tensor, context: Tensor) -> Tensor:
        """t_i = tanh(W_o [E y_{i-1}; s_i; c_i] + b_o), for one step (``[batch, ...]``) or all (``[batch, tgt_len,
        ...]``); E y_{i-1} had its dropout in ``embed``."""
        state_context = self.dropout(torch.cat([top, context], dim=-1))
        return torch.tanh(self.pre_output(torch.cat([emb, state_context], dim=-1)))

    def _luong_step(
        self, emb: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """Recur, then attend: the query is the new top-layer state; h~_i is fed back at the next step."""
        # s_i = RNN([E y_{i-1}; h~_{i-1}], s_{i-1})
        hidden, cell = self._recur(torch.cat([emb, state.input_feed], dim=-1), state)
        # c_i = attention(s_i, h)
        context, weights = self.attention(hidden[-1], enc.keys, enc.states, enc.mask)
        h_tilde = self._luong_pre_output(hidden[-1], context)
        return h_tilde, DecoderState(hidden, cell, h_tilde), weights

    def _luong_pre_output(self, top: Tensor, context: Tensor) -> Tensor:
        """h~_i = tanh(W_c [s_i; c_i] + b_c): ``[batch, hidden]``."""
        return torch.tanh(self.pre_output(self.dropout(torch.cat([top, context], dim=-1))))

    def _recur(self, x: Tensor, state: DecoderState) -> tuple[Tensor, Tensor | None]:
        """Stacked cells: input ``[batch, in]`` -> new hidden (and cell) ``[layers, batch, hidden]``."""
        return self._recur_layers(x, state, 0, [], [])

    def _recur_from_gates(
        self, emb_gates: Tensor, feed: Tensor, feed_weight: Tensor, state: DecoderState
    ) -> tuple[Tensor, Tensor | None]:
        """``_recur([E y; feed], state)`` given ``emb_gates`` = W_e E y + b_ih ``[batch, gates*hidden]``: the first
        cell's input product is finished with ``feed_weight`` (its W_c columns)."""
        first = self.cells[0]
        hidden_gates = F.linear(state.hidden[0], first.weight_hh, first.bias_hh)
        return self.recur_from_gates(emb_gates + F.linear(feed, feed_weight), hidden_gates, state)

    def recur_from_gates(
        self, gates_in: Tensor, hidden_gates: Tensor, state: DecoderState
    ) -> tuple[Tensor, Tensor | None]:
        """``_recur(x, state)`` given the first cell's two products, ``gates_in`` = W_ih x + b_ih and
        ``hidden_gates`` = W_hh s + b_hh (``[batch, gates*hidden]`` each): its gate arithmetic here, the cells
        above it as in ``_recur``."""
        first_cell = None if state.cell is None else state.cell[0]
        hidden, cell = self._first_gates(gates_in, hidden_gates, state.hidden[0], first_cell)
        return self._recur_layers(hidden, state, 1, [hidden], [] if cell is None else [cell])

    def _recur_layers(
        self, x: Tensor, state: DecoderState, start: int, hiddens: list[Tensor], cells: list[Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """Cells ``start``.. on ``x`` (the step's input when ``start`` is 0, else the output of layer
        ``start - 1``), appending to the new states of the layers below."""
        for layer in range(start, len(self.cells)):
            rnn = self.cells[layer]
            if layer > 0:
                x = self.dropout(x)
            if state.cell is None:
                x = rnn(x, state.hidden[layer])
            else:
                x, c = rnn(x, (state.hidden[layer], state.cell[layer]))
                cells.append(c)
            hiddens.append(x)
        return _stack(hiddens), _stack(cells) if cells else None

    def logits(self, pre_output: Tensor) -> Tensor:
        """W_out dropout(t) + b_out: ``[..., hidden]`` -> ``[..., vocab]``."""
        return self.output(self.dropout(pre_output))

    def forward(self, tgt_in: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Teacher forcing over a whole target batch: ``step`` at every position, with the products that do not
        depend on the recurrence taken out of the loop (module docstring).

        Args:
            tgt_in: ``[batch, tgt_len]`` BOS + target tokens (padded).
            enc: the encoded source batch.

        Returns:
            logits ``[batch, tgt_len, vocab]`` and attention weights ``[batch, tgt_len, src_len]``.
        """
        embedded = self.embed(tgt_in)  # all steps at once
        first, emb_size = self.cells[0], self.embedding.embedding_dim
        # W_ih [E y; feed] = W_e E y + W_c feed: the W_e half for every position in one GEMM
        emb_gates = F.linear(embedded, first.weight_ih[:, :emb_size], first.bias_ih)
        feed_weight = first.weight_ih[:, emb_size:]
        pre_outputs, attention = self._teacher_forced(embedded, emb_gates, feed_weight, enc)
        # One [batch*tgt_len, hidden] x [hidden, vocab] product instead of one per step.
        return self.logits(pre_outputs), attention

    def _bahdanau_teacher_forced(
        self, embedded: Tensor, emb_gates: Tensor, feed_weight: Tensor, enc: EncoderOutput
    ) -> tuple[Tensor, Tensor]:
        """The Bahdanau loop: attend and recur per position; the pre-outputs for all positions after it.
        ``embedded`` ``[batch, tgt_len, emb]``, ``emb_gates`` ``[batch, tgt_len, gates*hidden]`` ->
        pre-outputs ``[batch, tgt_len, hidden]``, attention ``[batch, tgt_len, src_len]``."""
        state = self.init_state(enc)
        tops, contexts, attention = [], [], []
        for gates in emb_gates.unbind(1):
            context, weights = self.attention(state.hidden[-1], enc.keys, enc.states, enc.mask)
            hidden, cell = self._recur_from_gates(gates, context, feed_weight, state)
            state = DecoderState(hidden, cell)
            tops.append(hidden[-1])
            contexts.append(context)
            attention.append(weights)
        pre = self._bahdanau_pre_output(embedded, torch.stack(tops, dim=1), torch.stack(contexts, dim=1))
        return pre, torch.stack(attention, dim=1)

    def _bahdanau_teacher_forced_compiled(
        self, embedded: Tensor, emb_gates: Tensor, feed_weight: Tensor, enc: EncoderOutput
    ) -> tuple[Tensor, Tensor]:
        """``_bahdanau_teacher_forced`` through ``BahdanauGruLoop``: same arguments, same results to float
        rounding (the Python loop where ``outside_compiled`` says so)."""
        if outside_compiled(emb_gates):
            return self._bahdanau_teacher_forced(embedded, emb_gates, feed_weight, enc)
        cell = self.cells[0]
        tops, contexts, weights = BahdanauGruLoop.apply(
            emb_gates.transpose(0, 1).contiguous(),
            self.init_state(enc).hidden[0],
            *self._attention_inputs(enc),
            feed_weight,
            cell.weight_hh,
            cell.bias_hh,
        )
        pre = self._bahdanau_pre_output(embedded, tops.transpose(0, 1), contexts.transpose(0, 1))
        return pre, weights.transpose(0, 1)

    def _luong_teacher_forced_compiled(
        self, embedded: Tensor, emb_gates: Tensor, feed_weight: Tensor, enc: EncoderOutput
    ) -> tuple[Tensor, Tensor]:
        """``_luong_teacher_forced`` through ``LuongGruLoop``: same arguments, same results to float rounding
        without dropout (with it, masks drawn before the loop); the Python loop where ``outside_compiled`` says
        so."""
        if outside_compiled(emb_gates):
            return self._luong_teacher_forced(embedded, emb_gates, feed_weight, enc)
        cell, pre = self.cells[0], self.pre_output
        steps, batch = emb_gates.size(1), emb_gates.size(0)
        # dropout on [s_t; c_t] at every position, its masks drawn for all of them at once
        masks = (
            self.dropout(emb_gates.new_ones(steps, batch, pre.in_features))
            if self.training and self.dropout.p > 0
            else None
        )
        h_tildes, weights = LuongGruLoop.apply(
            emb_gates.transpose(0, 1).contiguous(),
            self.init_state(enc).hidden[0],
            *self._attention_inputs(enc),
            feed_weight,
            cell.weight_hh,
            cell.bias_hh,
            pre.weight,
            pre.bias,
            masks,
        )
        return h_tildes.transpose(0, 1), weights.transpose(0, 1)

    def _luong_teacher_forced(
        self, embedded: Tensor, emb_gates: Tensor, feed_weight: Tensor, enc: EncoderOutput
    ) -> tuple[Tensor, Tensor]:
        """The Luong loop: h~_i feeds the next position, so the pre-output stays in it. Shapes as
        ``_bahdanau_teacher_forced``."""
        state = self.init_state(enc)
        pre_outputs, attention = [], []
        for gates in emb_gates.unbind(1):
            hidden, cell = self._recur_from_gates(gates, state.input_feed, feed_weight, state)
            context, weights = self.attention(hidden[-1], enc.keys, enc.states, enc.mask)
            h_tilde = self._luong_pre_output(hidden[-1], context)
            state = DecoderState(hidden, cell, h_tilde)
            pre_outputs.append(h_tilde)
            attention.append(weights)
        return torch.stack(pre_outputs, dim=1), torch.stack(attention, dim=1)


def _gru_gates(
    gates_in: Tensor, hidden_gates: Tensor, hidden: Tensor, cell: Tensor | None
) -> tuple[Tensor, None]:
    """``nn.GRUCell``'s update given its products ``gates_in`` = W_ih x + b_ih and ``hidden_gates`` = W_hh h + b_hh
    (``[batch, 3*hidden]`` each), h ``[batch, hidden]``:

    r = sigmoid(i_r + W_hr h + b_hr), z = sigmoid(i_z + W_hz h + b_hz)
    n = tanh(i_n + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
    """
    i_r, i_z, i_n = gates_in.chunk(3, dim=-1)
    h_r, h_z, h_n = hidden_gates.chunk(3, dim=-1)
    reset, update = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    new = torch.tanh(i_n + reset * h_n)
    return new + update * (hidden - new), None


def _lstm_gates(
    gates_in: Tensor, hidden_gates: Tensor, hidden: Tensor, cell: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``nn.LSTMCell``'s update given its products ``gates_in`` = W_ih x + b_ih and ``hidden_gates`` = W_hh h +
    b_hh (``[batch, 4*hidden]`` each), h and c ``[batch, hidden]``:

    i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (gates_in + hidden_gates), in four chunks
    c' = f * c + i * g,  h' = o * tanh(c')
    """
    assert cell is not None, "an LSTM step needs its memory cell"
    i, f, g, o = (gates_in + hidden_gates).chunk(4, dim=-1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell
