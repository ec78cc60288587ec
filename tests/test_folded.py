"""The folded decoder (``nmt.model.folded``) against the reference ``Seq2Seq.decode_step``: the same function in
float64 for every model variant, the same hypotheses on a trained model, and the translator's use of it."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

import pytest
import torch
from corpus import EN

from nmt.config import AttentionType, DecoderStep, ModelConfig, RnnType, SearchConfig, WeightsChoice
from nmt.decode import decode_ids
from nmt.model.compiled_loops import loops_extension
from nmt.model.ensemble import Ensemble
from nmt.model.folded import FoldedModel, fold
from nmt.model.seq2seq import Seq2Seq, build_model
from nmt.search import choice_extension
from nmt.translate import Translator, load_model_dir

CPU = torch.device("cpu")
FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"
# A machine without a C++ compiler or ninja searches with the eager step; with them, a failed build is a failure.
needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None or shutil.which("ninja") is None,
    reason="the compiled search step needs a C++ compiler and ninja",
)
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
            got_logits, _, _ = folded.decode_step_logits(prev, folded_state, folded_enc)
            got, folded_state, got_weights = folded.decode_step(prev, folded_state, folded_enc)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
            assert torch.equal(got, got_logits.log_softmax(-1))
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


@needs_compiler
@pytest.mark.parametrize(("rnn", "layers"), [(RnnType.gru, 1), (RnnType.lstm, 2)])
def test_the_compiled_attention_and_mixing_give_the_eager_step_in_float64(rnn, layers):
    """Beam-search rows (two per sentence), a padded sentence and a one-token one, five steps: weights, log-probs
    and states equal the eager folded step's to float64 rounding."""
    model = random_model(rnn, DecoderStep.bahdanau, AttentionType.bahdanau, layers)
    eager, compiled = fold(model), fold(model, compiled=True)
    assert not eager.compiled_attention and compiled.compiled_attention
    src = torch.randint(4, 30, (3, 8), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([8, 5, 1])
    src = src * (torch.arange(8) < lengths.unsqueeze(1))
    beams = torch.arange(3).repeat_interleave(2)
    with torch.no_grad():
        enc = eager.encode(src, lengths)
        state = eager.init_decoder_state(enc).index_select(beams)
        compiled_state = state
        prev = torch.tensor([2, 2, 5, 9, 2, 39])
        for _ in range(5):
            want, state, want_weights = eager.decode_step(prev, state, enc)
            got, compiled_state, got_weights = compiled.decode_step(prev, compiled_state, enc)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
            torch.testing.assert_close(got_weights, want_weights, rtol=0, atol=1e-12)
            assert float(got_weights[4:].sum(dim=1).sub(1).abs().max()) < 1e-12
            assert bool((got_weights[4:, 1:] == 0).all())  # the one-token sentence's padding
            torch.testing.assert_close(compiled_state.hidden, state.hidden, rtol=0, atol=1e-12)
            prev = want.argmax(dim=-1)


@needs_compiler
def test_dropping_sentences_through_the_index_gives_the_step_on_copied_rows():
    """The compiled model's encoding drops and reorders sentences through ``sentences`` without copying products,
    keys or mask; its steps equal the eager step's on an encoding whose rows were copied (float64)."""
    model = random_model(RnnType.gru, DecoderStep.bahdanau, AttentionType.bahdanau, 1)
    eager, compiled = fold(model), fold(model, compiled=True)
    src = torch.randint(4, 30, (4, 6), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([6, 2, 5, 4])
    src = src * (torch.arange(6) < lengths.unsqueeze(1))
    keep = torch.tensor([3, 0, 2])  # sentence 1 finished; the rest reordered
    with torch.no_grad():
        indexed, copied = compiled.encode(src, lengths), eager.encode(src, lengths)
        assert copied.sentences is None and torch.equal(indexed.sentences, torch.arange(4))
        products = indexed.products
        indexed, copied = indexed.index_select(keep), copied.index_select(keep)
        assert indexed.products is products  # not copied
        assert torch.equal(indexed.sentences, keep) and indexed.products.size(0) == 4
        assert indexed.hidden.size(1) == 3 and torch.equal(indexed.hidden, copied.hidden)
        own = indexed.own_rows()
        for name in ("products", "mask", "keys"):
            assert torch.equal(getattr(own, name), getattr(copied, name))
        state = eager.init_decoder_state(copied)
        compiled_state = compiled.init_decoder_state(indexed)
        prev = torch.tensor([2, 7, 9])
        for _ in range(4):
            want, state, want_weights = eager.decode_step(prev, state, copied)
            got, compiled_state, got_weights = compiled.decode_step(prev, compiled_state, indexed)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
            torch.testing.assert_close(got_weights, want_weights, rtol=0, atol=1e-12)
            prev = want.argmax(dim=-1)
        # the eager step (another device or float type than the kernels') reads the same rows
        got, _, got_weights = eager.decode_step(prev, state, indexed)
        want, _, want_weights = eager.decode_step(prev, state, copied)
        assert torch.equal(got, want) and torch.equal(got_weights, want_weights)


@needs_compiler
def test_the_compiled_step_applies_to_additive_attention_in_the_bahdanau_order_only():
    for step, attention in [
        (DecoderStep.luong, AttentionType.bahdanau),
        (DecoderStep.bahdanau, AttentionType.general),
    ]:
        assert not fold(random_model(RnnType.gru, step, attention, 1), compiled=True).compiled_attention


@needs_compiler
def test_the_compiled_step_rejects_rows_that_do_not_fit_its_arguments():
    folded = fold(random_model(RnnType.gru, DecoderStep.bahdanau, AttentionType.bahdanau, 1), compiled=True)
    src, lengths = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2])
    with torch.no_grad():
        enc = folded.encode(src, lengths)
        state = folded.init_decoder_state(enc)
        with pytest.raises(RuntimeError, match="outside the tables' 40 rows"):
            folded.decode_step(torch.tensor([2, 40]), state, enc)
        with pytest.raises(
            RuntimeError, match="3 query rows do not divide into the working set's 2 sentences"
        ):
            folded.decode_step(torch.tensor([2, 2, 2]), state.index_select(torch.tensor([0, 0, 1])), enc)
        outside = dataclasses.replace(enc, sentences=torch.tensor([0, 2]))
        with pytest.raises(RuntimeError, match="a sentence outside the keys' 2 rows"):
            folded.decode_step(torch.tensor([2, 2]), state, outside)


@needs_compiler
def test_the_compiled_step_gives_empty_outputs_for_an_empty_batch():
    """No sentences and no rows: empty weights and products, not a division by zero in the kernel."""
    folded = fold(random_model(RnnType.gru, DecoderStep.bahdanau, AttentionType.bahdanau, 1), compiled=True)
    src, lengths = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2])
    none = torch.empty(0, dtype=torch.long)
    with torch.no_grad():
        enc = folded.encode(src, lengths).index_select(none)
        hidden = folded.init_decoder_state(enc).hidden[-1]
        weights, mixed = folded._attend_and_mix_compiled(none, hidden, enc)
    assert weights.shape == (0, 3)
    assert mixed.shape == (0, folded.tables.size(1))


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


@needs_compiler
@pytest.mark.parametrize(("beam", "nbest"), [(1, 1), (5, 5)])
def test_a_trained_model_gives_the_same_hypotheses_with_the_compiled_step(trained, beam, nbest):
    """Exact tokens (greedy) and exact n-best lists (beam 5), in float32, against the eager folded step."""
    model, _, src_ids = trained
    cfg = SearchConfig(beam_size=beam, nbest=nbest, batch_tokens=60)
    want = decode_ids(fold(model), src_ids, cfg, CPU)
    compiled = fold(model, compiled=True)
    assert compiled.compiled_attention
    got = decode_ids(compiled, src_ids, cfg, CPU)
    assert [[h.tokens for h in nbest] for nbest in got] == [[h.tokens for h in nbest] for nbest in want]
    for got_nbest, want_nbest in zip(got, want):
        for g, w in zip(got_nbest, want_nbest):
            assert g.score == pytest.approx(w.score, abs=1e-5)
            torch.testing.assert_close(g.attention, w.attention, rtol=0, atol=1e-5)


@needs_compiler
def test_a_trained_model_gives_the_same_greedy_tokens_with_the_compiled_choice(trained, monkeypatch):
    """Greedy search's compiled choice (``nmt.search``) against the reference's choice from the log-probs, on the
    plain model and on the compiled folded one: exact tokens."""
    model, _, src_ids = trained
    cfg = SearchConfig(beam_size=1, batch_tokens=60)
    assert choice_extension() is not None
    for decoder in (model, fold(model, compiled=True)):
        got = decode_ids(decoder, src_ids, cfg, CPU)
        with monkeypatch.context() as reference:
            reference.setattr("nmt.search.choice_extension", lambda: None)
            want = decode_ids(decoder, src_ids, cfg, CPU)
        assert [g.tokens for (g,) in got] == [w.tokens for (w,) in want]
        assert [g.score for (g,) in got] == pytest.approx([w.score for (w,) in want], abs=1e-5)


def test_the_translator_decodes_with_the_folded_model_in_float_and_the_plain_one_in_int8():
    translator = Translator.from_dir(FIXTURE, device="cpu")
    assert isinstance(translator.model, FoldedModel)
    # the compiled step where it can be built (nmt.native), else the eager one
    assert translator.model.compiled_attention == (loops_extension() is not None)
    assert not translator.model.training
    int8 = Translator.from_dir(FIXTURE, device="cpu", quantize="int8")  # int8 is faster unfolded
    assert isinstance(int8.model, Seq2Seq)
    assert type(int8.model.decoder.output).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
