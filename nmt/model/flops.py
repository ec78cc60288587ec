"""Forward-pass FLOPs of one sentence pair, counted from the configuration.

Counting: matrix products only, 2 FLOPs per multiply-add (what ``torch.utils.flop_counter`` counts); bias
additions, nonlinearities, gates' elementwise arithmetic, softmax and embedding lookups are left out (they are
a few percent for realistic sizes). Padding is not counted: a batch costs the sum over its sentences. A
training step (forward + backward) costs about 3x the forward FLOPs.
"""

from __future__ import annotations

from nmt.config import AttentionType, DecoderStep, ModelConfig, RnnType
from nmt.model.encoder import encoder_size


def _rnn_flops(gates: int, input_size: int, hidden: int) -> int:
    """One RNN step: ``gates`` blocks of [input -> hidden] and [hidden -> hidden] products."""
    return 2 * gates * hidden * (input_size + hidden)


def forward_flops(cfg: ModelConfig, tgt_vocab_size: int, src_len: int, tgt_len: int) -> dict[str, int]:
    """FLOPs of ``Seq2Seq.forward`` on one sentence of ``src_len`` source and ``tgt_len`` target tokens.

    Returns a breakdown ``{encoder, keys, bridge, decoder_rnn, attention, pre_output, output, total}``.
    Per-token costs follow by dividing: ``encoder`` and ``keys`` grow with ``src_len``, ``attention`` with
    ``src_len * tgt_len``, the rest (but ``bridge``, once per sentence) with ``tgt_len``.
    """
    emb, hid, att = cfg.emb_size, cfg.hidden_size, cfg.attention_size
    enc_hid = encoder_size(cfg)
    annotation = 2 * enc_hid
    gates = 4 if cfg.rnn_type == RnnType.lstm else 3
    luong = cfg.decoder_step == DecoderStep.luong

    encoder = 0
    for layer in range(cfg.enc_layers):
        encoder += 2 * _rnn_flops(gates, emb if layer == 0 else annotation, enc_hid)  # two directions

    if cfg.attention == AttentionType.bahdanau:
        key_size = att
        score = 2 * hid * att + 2 * src_len * att  # W s once, then v^T over the positions
    else:
        key_size = hid  # keys live in the query's space (`dot` projects them only when the sizes differ)
        score = 2 * src_len * hid
    context = 2 * src_len * annotation

    decoder_rnn = 0
    for layer in range(cfg.dec_layers):
        input_size = emb + (hid if luong else annotation) if layer == 0 else hid
        decoder_rnn += _rnn_flops(gates, input_size, hid)
    pre_in = hid + annotation if luong else emb + hid + annotation

    counts = {
        "encoder": src_len * encoder,
        "keys": 0
        if cfg.attention == AttentionType.dot and annotation == hid
        else src_len * 2 * annotation * key_size,
        "bridge": (2 if cfg.rnn_type == RnnType.lstm else 1) * cfg.dec_layers * 2 * annotation * hid
        if cfg.bridge
        else 0,
        "decoder_rnn": tgt_len * decoder_rnn,
        "attention": tgt_len * (score + context),
        "pre_output": tgt_len * 2 * pre_in * hid,
        "output": tgt_len * 2 * hid * tgt_vocab_size,
    }
    counts["total"] = sum(counts.values())
    return counts
