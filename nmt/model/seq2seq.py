"""RNN encoder-decoder with attention (Bahdanau, Cho & Bengio, 2014): the model search and training see.

Search talks to it only through ``encode`` -> ``init_decoder_state`` -> ``decode_step`` (repeated); training
through ``forward`` (teacher forcing). Both run the same ``Decoder.step``, so they compute the same thing;
``nmt.model.folded`` computes it with fewer products for the translator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.config import ModelConfig
from nmt.model.decoder import Decoder
from nmt.model.encoder import Encoder, encoder_size, lengths_to_mask
from nmt.model.flops import forward_flops
from nmt.model.state import DecoderState, EncoderOutput
from nmt.vocab import PAD_ID


class Seq2Seq(nn.Module):
    """Bidirectional encoder, attentional decoder; sizes and variants from ``ModelConfig``."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.tgt_vocab_size = tgt_vocab_size
        self.encoder = Encoder(
            cfg.rnn_type, src_vocab_size, cfg.emb_size, encoder_size(cfg), cfg.enc_layers, cfg.dropout
        )
        self.decoder = Decoder(cfg, tgt_vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-init_range, init_range) for every weight when ``init_range > 0``; padding embeddings zero."""
        if self.cfg.init_range > 0:
            for param in self.parameters():
                nn.init.uniform_(param, -self.cfg.init_range, self.cfg.init_range)
        with torch.no_grad():
            self.encoder.embedding.weight[PAD_ID].zero_()
            self.decoder.embedding.weight[PAD_ID].zero_()

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """Encode a source batch once: ``src`` ``[batch, src_len]``, ``src_lengths`` ``[batch]``."""
        states, hidden, cell = self.encoder(src, src_lengths)
        return EncoderOutput(
            states=states,
            mask=lengths_to_mask(src_lengths, src.size(1), src.device),
            keys=self.decoder.attention.project_keys(states),
            hidden=hidden,
            cell=cell,
        )

    def init_decoder_state(self, enc: EncoderOutput) -> DecoderState:
        """The decoder's state before the first target token (from the encoder's final states)."""
        return self.decoder.init_state(enc)

    def decode_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One target token for every row.

        Args:
            prev_tokens: ``[rows]`` y_{i-1} (BOS at the first step); ``rows = sentences * group``, the
                ``group`` rows of a sentence consecutive (its beams; 1 in greedy search).
            state: the state after step i-1, ``rows`` rows (``init_decoder_state``'s, ``index_select``-ed
                to the rows, at the first step).
            enc: ``encode``'s output, one row per sentence.

        Returns:
            log p(y_i | y_<i, x) ``[rows, tgt_vocab]``, the new state, attention weights ``[rows, src_len]``.
        """
        logits, state, weights = self.decode_step_logits(prev_tokens, state, enc)
        return torch.log_softmax(logits, dim=-1), state, weights

    def decode_step_logits(
        self, prev_tokens: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """``decode_step`` before its ``log_softmax``: logits ``[rows, tgt_vocab]``, the new state, attention
        weights ``[rows, src_len]``."""
        pre_output, state, weights = self.pre_output_step(prev_tokens, state, enc)
        return self.decoder.logits(pre_output), state, weights

    def pre_output_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """``decode_step`` up to the output layer: pre-output ``[rows, hidden]``, the new state, attention weights
        ``[rows, src_len]``."""
        return self.decoder.step(self.decoder.embed(prev_tokens), state, enc)

    @property
    def output_layer(self) -> nn.Module:
        """W_out, b_out: ``[..., hidden]`` -> ``[..., tgt_vocab]``."""
        return self.decoder.output

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing.

        Args:
            src: ``[batch, src_len]`` source ids (padded with PAD_ID).
            src_lengths: ``[batch]`` source lengths.
            tgt_in: ``[batch, tgt_len]`` BOS + target ids (padded).

        Returns:
            logits ``[batch, tgt_len, tgt_vocab]`` and attention weights ``[batch, tgt_len, src_len]``.
        """
        return self.decoder(tgt_in, self.encode(src, src_lengths))

    def compile_loops(self) -> str:
        """Train through the compiled loops over time (``nmt.model.compiled_loops``) where encoder and decoder
        allow, from now on; builds the extension on first use. Returns which loops run, for the training log."""
        return f"encoder loop {self.encoder.compile_loop()}, decoder loop {self.decoder.compile_loop()}"

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (a tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward_flops(self, src_len: int, tgt_len: int) -> dict[str, int]:
        """Forward FLOPs of one sentence pair, by component (see ``nmt.model.flops``)."""
        return forward_flops(self.cfg, self.tgt_vocab_size, src_len, tgt_len)


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    """The model for ``cfg``, freshly initialised (on the CPU; move it with ``.to(device)``)."""
    return Seq2Seq(cfg, src_vocab_size, tgt_vocab_size)
