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

The recurrence runs on ``nn.GRUCell``/``nn.LSTMCell`` (one per layer, dropout between layers). Teacher-forced
``forward`` embeds all target tokens once before the loop, collects the pre-outputs ``[batch, tgt_len, hidden]``
and applies the output projection once after it; the loop itself has no host synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.config import DecoderStep, ModelConfig, RnnType
from nmt.model.attention import build_attention
from nmt.model.encoder import encoder_size
from nmt.model.state import DecoderState, EncoderOutput
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
        # The step order is fixed for the model's life: pick its step and its h~_0 once, not at every call.
        self._step = self._luong_step if input_feeding else self._bahdanau_step
        self._initial_feed = _zero_feed if input_feeding else _no_feed

        self.embedding = nn.Embedding(vocab_size, emb, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(cfg.dropout)
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
        pre_in = hid + annotation if input_feeding else emb + hid + annotation
        self.pre_output = nn.Linear(pre_in, hid)  # W_c (luong) or W_o (bahdanau)

        self.output = nn.Linear(hid, vocab_size)
        if cfg.tie_embeddings:  # ModelConfig checks emb_size == hidden_size, the pre-output's width
            self.output.weight = self.embedding.weight

    def embed(self, tokens: Tensor) -> Tensor:
        """E y with dropout: ``[batch]`` or ``[batch, tgt_len]`` ids -> ``[..., emb]``."""
        return self.dropout(self.embedding(tokens))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """s_0 = tanh(W_l [h_fwd_last; h_bwd_first] + b_l) per layer l (zeros without a bridge).

        Returns a state with ``hidden`` (and ``cell`` for an LSTM) ``[dec_layers, batch, hidden]`` and, for the
        Luong step, ``input_feed`` h~_0 = 0 ``[batch, hidden]``.
        """
        batch = enc.states.size(0)
        zeros = enc.states.new_zeros(self.num_layers, batch, self.hidden_size)
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
            emb: E y_{i-1} from ``embed``, ``[batch, emb]``.
            state: the state after step i-1.
            enc: the encoded batch.

        Returns:
            pre-output ``[batch, hidden]``, the state after step i, attention weights ``[batch, src_len]``.
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
        # t_i = tanh(W_o [E y_{i-1}; s_i; c_i] + b_o); E y_{i-1} had its dropout in `embed`
        state_context = self.dropout(torch.cat([hidden[-1], context], dim=-1))
        pre = torch.tanh(self.pre_output(torch.cat([emb, state_context], dim=-1)))
        return pre, DecoderState(hidden, cell), weights

    def _luong_step(
        self, emb: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """Recur, then attend: the query is the new top-layer state; h~_i is fed back at the next step."""
        # s_i = RNN([E y_{i-1}; h~_{i-1}], s_{i-1})
        hidden, cell = self._recur(torch.cat([emb, state.input_feed], dim=-1), state)
        # c_i = attention(s_i, h)
        context, weights = self.attention(hidden[-1], enc.keys, enc.states, enc.mask)
        # h~_i = tanh(W_c [s_i; c_i] + b_c)
        h_tilde = torch.tanh(self.pre_output(self.dropout(torch.cat([hidden[-1], context], dim=-1))))
        return h_tilde, DecoderState(hidden, cell, h_tilde), weights

    def _recur(self, x: Tensor, state: DecoderState) -> tuple[Tensor, Tensor | None]:
        """Stacked cells: input ``[batch, in]`` -> new hidden (and cell) ``[layers, batch, hidden]``."""
        hiddens, cells = [], []
        for layer, rnn in enumerate(self.cells):
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
        """Teacher forcing over a whole target batch.

        Args:
            tgt_in: ``[batch, tgt_len]`` BOS + target tokens (padded).
            enc: the encoded source batch.

        Returns:
            logits ``[batch, tgt_len, vocab]`` and attention weights ``[batch, tgt_len, src_len]``.
        """
        embedded = self.embed(tgt_in)  # all steps at once
        state = self.init_state(enc)
        pre_outputs, attention = [], []
        for emb in embedded.unbind(1):
            pre, state, weights = self.step(emb, state, enc)
            pre_outputs.append(pre)
            attention.append(weights)
        # One [batch*tgt_len, hidden] x [hidden, vocab] product instead of one per step.
        return self.logits(torch.stack(pre_outputs, dim=1)), torch.stack(attention, dim=1)
