"""The folded decoder (``nmt.model.folded``) against the reference ``Seq2Seq.decode_step``: the same function in
float64 for every model variant, the same hypotheses on a trained model, and the translator's use of it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from corpus import EN

from nmt.config import AttentionType, DecoderStep, ModelConfig, RnnType, SearchConfig, WeightsChoice
from nmt.decode import decode_ids
from nmt.model.ensemble import Ensemble
from nmt.model.folded import FoldedModel, fold
from nmt.model.seq2seq import Seq2Seq, build_model
from nmt.translate import Translator, load_model_dir

CPU = torch.device("cpu")
FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"
VARIANTS = list(
    itertools.product(
        [RnnType.gru, RnnType.lstm],
        [DecoderStep.bahdanau, DecoderStep.luong],
        [AttentionType.bahdanau, AttentionType.general],
        [1, 2],
    )
)


def random_model(rnn: RnnType, step: DecoderStep, attention: AttentionType, layers: int) -> torch.nn.Module:
    """A float64 model in eval mode with all sizes different, so that a wrong column split cannot pass."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        rnn_type=rnn,
        decoder_step=step,
        attention=attention,
        enc_layers=layers,
        dec_layers=layers,
        emb_size=12,
        hidden_size=20,
        enc_hidden_size=7,
        attention_size=9,
        init_range=0.5,
    )
    return build_model(cfg, src_vocab_size=30, tgt_vocab_size=40).double().eval()


@pytest.mark.parametrize(("rnn", "step", "attention", "layers"), VARIANTS)
def test_the_folded_step_is_the_reference_step_in_float64(rnn, step, attention, layers):
    model = random_model(rnn, step, attention, layers)
    folded = fold(model)
    assert isinstance(folded, FoldedModel)
    src = torch.randint(4, 30, (3, 8), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([8, 5, 2])
    src = src * (torch.arange(8) < lengths.unsqueeze(1))
    beams = torch.arange(3).repeat_interleave(2)  # two rows per sentence, as beam search groups them
    with torch.no_grad():
        enc, folded_enc = model.encode(src, lengths), folded.encode(src, lengths)
        state = model.init_decoder_state(enc).index_select(beams)
        folded_state = folded.init_decoder_state(folded_enc).index_select(beams)
        prev = torch.tensor([2, 2, 5, 9, 2, 39])
        for _ in range(5):
            want, state, want_weights = model.decode_step(prev, state, enc)
            got, folded_state, got_weights = folded.decode_step(prev, folded_state, folded_enc)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
            torch.testing.assert_close(got_weights, want_weights, rtol=0, atol=1e-12)
            for name in ("hidden", "cell", "input_feed"):
                want_part, got_part = getattr(state, name), getattr(folded_state, name)
                assert (want_part is None) == (got_part is None)
                if want_part is not None:
                    torch.testing.assert_close(got_part, want_part, rtol=0, atol=1e-12)
            prev = want.argmax(dim=-1)


def test_the_tables_hold_the_embedding_products_of_every_target_piece():
    model = random_model(RnnType.gru, DecoderStep.bahdanau, AttentionType.bahdanau, 1)
    folded = fold(model)
    decoder = model.decoder
    emb = decoder.embedding.embedding_dim
    piece = 17
    e = decoder.embedding.weight[piece]
    first, pre = decoder.cells[0], decoder.pre_output
    want = torch.cat([first.weight_ih[:, :emb] @ e + first.bias_ih, pre.weight[:, :emb] @ e + pre.bias])
    torch.testing.assert_close(folded.tables[piece], want, rtol=0, atol=1e-12)
    assert folded.tables.shape == (40, 3 * 20 + 20)


def test_fold_folds_every_member_of_an_ensemble_and_leaves_other_models_alone():
    model = random_model(RnnType.gru, DecoderStep.bahdanau, AttentionType.bahdanau, 1)
    ensemble = fold(Ensemble([model, model]))
    assert isinstance(ensemble, Ensemble)
    assert all(isinstance(member, FoldedModel) for member in ensemble.members)
    other = torch.nn.Linear(2, 2)
    assert fold(other) is other


@pytest.fixture(scope="module")
def trained():
    """The fixture model directory's trained model, its tokenizer, and source sentences."""
    _, tokenizer, model = load_model_dir(FIXTURE, WeightsChoice())
    lines = [" ".join(EN[(i * k + 3) % 10] for k in range(1, 2 + i % 7)) for i in range(40)]
    return model.eval(), tokenizer, tokenizer.encode_src(lines)


@pytest.mark.parametrize(("beam", "nbest"), [(1, 1), (5, 5)])
def test_a_trained_model_folded_gives_the_same_hypotheses(trained, beam, nbest):
    model, _, src_ids = trained
    cfg = SearchConfig(beam_size=beam, nbest=nbest, batch_tokens=60)  # several batches
    want = decode_ids(model, src_ids, cfg, CPU)
    got = decode_ids(fold(model), src_ids, cfg, CPU)
    assert [[h.tokens for h in nbest] for nbest in got] == [[h.tokens for h in nbest] for nbest in want]
    for got_nbest, want_nbest in zip(got, want):
        for g, w in zip(got_nbest, want_nbest):
            assert g.score == pytest.approx(w.score, abs=1e-5)
            torch.testing.assert_close(g.attention, w.attention, rtol=0, atol=1e-5)


def test_the_translator_decodes_with_the_folded_model_in_float_and_the_plain_one_in_int8():
    translator = Translator.from_dir(FIXTURE, device="cpu")
    assert isinstance(translator.model, FoldedModel)
    assert not translator.model.training
    int8 = Translator.from_dir(FIXTURE, device="cpu", quantize="int8")  # int8 is faster unfolded
    assert isinstance(int8.model, Seq2Seq)
    assert type(int8.model.decoder.output).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
