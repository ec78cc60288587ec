"""int8 translation (``nmt.translate.quantize_int8``) against fp32: every linear and recurrent layer quantized,
translations close to fp32's."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from nmt.config import ModelConfig, SearchConfig
from nmt.model import Seq2Seq
from nmt.model.folded import fold
from nmt.search import search
from nmt.translate import Translator, quantize_int8

FLOAT_LAYERS = (nn.Linear, nn.GRU, nn.LSTM, nn.GRUCell, nn.LSTMCell)
VARIANTS = {
    "gru-bahdanau": ModelConfig(rnn_type="gru", decoder_step="bahdanau", attention="bahdanau"),
    "lstm-luong-2-layers": ModelConfig(
        rnn_type="lstm", decoder_step="luong", attention="general", enc_layers=2, dec_layers=2
    ),
}


def small_model(cfg: ModelConfig) -> Seq2Seq:
    """A fixed random model whose next-token distributions are peaked (init_range 0.5)."""
    torch.manual_seed(0)
    cfg = replace(cfg, emb_size=16, hidden_size=16, attention_size=16, dropout=0.0, init_range=0.5)
    return Seq2Seq(cfg, src_vocab_size=20, tgt_vocab_size=14).eval()


def source_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of varying width and source length, so rows shrink at different steps and src_len changes."""
    gen = torch.Generator().manual_seed(1)
    batches = []
    for lengths in ([5, 3, 7, 1, 6, 2], [9, 9, 4], [2], [11, 6, 8, 3]):
        lengths_t = torch.tensor(lengths)
        width = max(lengths)
        src = torch.randint(4, 20, (len(lengths), width), generator=gen)
        batches.append((src * (torch.arange(width) < lengths_t.unsqueeze(1)), lengths_t))
    return batches


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_int8_quantizes_every_linear_and_recurrent_layer(variant: str, folded: bool) -> None:
    model = small_model(VARIANTS[variant])
    quantized = quantize_int8(fold(model) if folded else model)
    left = [name for name, module in quantized.named_modules() if type(module) in FLOAT_LAYERS]
    assert left == []
    kinds = {type(module).__module__ for module in quantized.modules() if module is not quantized}
    assert "torch.ao.nn.quantized.dynamic.modules.rnn" in kinds  # encoder RNN and decoder cells
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds
    src, lengths = source_batches()[0]
    for hyps in search(quantized, src, lengths, SearchConfig(beam_size=3, max_len_a=1.0, max_len_b=4)):
        assert len(hyps) == 1 and torch.isfinite(torch.tensor(hyps[0].score))


def test_int8_translations_match_fp32_on_most_sentences(digit_model_dir) -> None:
    lines = (digit_model_dir.parent / "corpus" / "test.en").read_text(encoding="utf-8").splitlines()
    fp32 = Translator.from_dir(digit_model_dir, device="cpu").translate(lines, attention=False)
    int8 = Translator.from_dir(digit_model_dir, device="cpu", quantize="int8").translate(
        lines, attention=False
    )
    same = sum(a.text == b.text for a, b in zip(fp32, int8))
    assert same >= 0.8 * len(lines)
