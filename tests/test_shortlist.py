"""The vocabulary shortlist: the lexicon of a hand-counted corpus, the batch shortlists, search over a shortlist
against search over the full vocabulary, the lexicon file, and who writes it (training, ``nmt lexicon``)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import digit_config

from nmt.config import (
    ConfigValueError,
    LexiconConfig,
    LexiconSettings,
    SearchConfig,
    TranslationSearchConfig,
)
from nmt.decode import decode_ids
from nmt.errors import NmtError
from nmt.model.ensemble import Ensemble
from nmt.shortlist import (
    LEXICON_FILE,
    Lexicon,
    Shortlist,
    ShortlistModel,
    lexicon_command,
    lexicon_from_pairs,
    lexicon_from_split,
    load_lexicon,
    output_rows,
    save_lexicon,
)
from nmt.train.trainer import load_prepared, train
from nmt.translate import Translator, quantize_int8
from nmt.vocab import BOS_ID

FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"
PROBES = ["three one four", "one five nine two six", "zero", "seven seven eight eight", "two two nine"]
CPU = torch.device("cpu")

# Four pairs over 8-piece vocabularies (0..3 are the specials). Sentences per piece: c(s) 4:2 5:2 6:1 7:1 (the
# second 5 of pair 2 counts once), c(t) 4:2 5:1 6:2 7:2. Co-occurring pairs and Dice 2c(s,t)/(c(s)+c(t)):
#   s=4: t6 2*2/4=1, t7 2/4=.5                -> [6, 7, -1]
#   s=5: t7 2*2/4=1, t4 2/4=.5, t6 2/4=.5     -> [7, 4, 6]   (the tie goes to the smaller id)
#   s=6: t4 2/3, t7 2/3                       -> [4, 7, -1]
#   s=7: t5 2/2=1, t4 2/3                     -> [5, 4, -1]
# Target tokens 4:2 5:1 6:2 7:2, the rest 0, so by frequency (ties: smaller id): 4 6 7 5 0 1 2 3.
TINY_SRC = [[4, 5], [4], [5, 5, 6], [7]]
TINY_TGT = [[6, 7], [6], [7, 4], [5, 4]]
TINY_TABLE = [[-1, -1, -1]] * 4 + [[6, 7, -1], [7, 4, 6], [4, 7, -1], [5, 4, -1]]
TINY_FREQUENT = [4, 6, 7, 5, 0, 1, 2, 3]


def tiny_lexicon() -> Lexicon:
    return lexicon_from_pairs(TINY_SRC, TINY_TGT, (8, 8), per_source=3)


def full_shortlist(translator: Translator) -> Shortlist:
    """A shortlist that always covers the whole target vocabulary (through the frequent list)."""
    tok = translator.tokenizer
    lexicon = Lexicon(
        np.full((tok.src_vocab_size, 1), -1, np.int32), np.arange(tok.tgt_vocab_size, dtype=np.int32)
    )
    return Shortlist(lexicon, frequent=tok.tgt_vocab_size, per_source=1)


@pytest.fixture(scope="module")
def fixture_translator() -> Translator:
    return Translator.from_dir(FIXTURE, device="cpu")


def probe_ids(translator: Translator) -> list[list[int]]:
    return translator.tokenizer.encode_src(PROBES)


def assert_same_hypotheses(got, want) -> None:
    assert len(got) == len(want)
    for got_nbest, want_nbest in zip(got, want):
        assert [(h.tokens, h.score, h.log_prob) for h in got_nbest] == [
            (h.tokens, h.score, h.log_prob) for h in want_nbest
        ]
        for g, w in zip(got_nbest, want_nbest):
            assert (g.attention is None and w.attention is None) or torch.equal(g.attention, w.attention)


# ------------------------------------------------------------------------------------------ the lexicon
def test_the_lexicon_of_a_hand_counted_corpus():
    lexicon = tiny_lexicon()
    assert lexicon.table.dtype == np.int32 and lexicon.table.tolist() == TINY_TABLE
    assert lexicon.frequent.dtype == np.int32 and lexicon.frequent.tolist() == TINY_FREQUENT
    shorter = lexicon_from_pairs(TINY_SRC, TINY_TGT, (8, 8), per_source=1)
    assert shorter.table.tolist() == [row[:1] for row in TINY_TABLE]


def test_a_batch_shortlist_holds_the_specials_the_frequent_and_the_listed_pieces():
    shortlist = Shortlist(tiny_lexicon(), frequent=1, per_source=2)
    src = torch.tensor([[4, 0], [6, 5]])  # pieces 4, 5, 6 and padding
    # specials 0-3, frequent [4], listed: 4 -> 6 7, 5 -> 7 4, 6 -> 4 7
    assert shortlist.ids(src).tolist() == [0, 1, 2, 3, 4, 6, 7]
    assert Shortlist(tiny_lexicon(), frequent=0, per_source=1).ids(torch.tensor([[7]])).tolist() == [
        0,
        1,
        2,
        3,
        5,
    ]


@pytest.mark.parametrize(("frequent", "per_source"), [(0, 0), (0, 3), (2, 1), (8, 3)])
def test_every_shortlist_is_sorted_starts_with_the_specials_and_covers_what_it_lists(frequent, per_source):
    lexicon = tiny_lexicon()
    shortlist = Shortlist(lexicon, frequent, per_source)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        src = torch.randint(0, 8, (3, 4), generator=gen)
        ids = shortlist.ids(src).tolist()
        assert ids == sorted(set(ids)) and ids[:4] == [0, 1, 2, 3]  # positions of the specials = their ids
        listed = {t for s in src.flatten().tolist() for t in lexicon.table[s, :per_source].tolist() if t >= 0}
        assert set(ids) == {0, 1, 2, 3} | set(lexicon.frequent[:frequent].tolist()) | listed


def test_the_shortlist_sizes_are_checked_with_their_keys():
    with pytest.raises(ConfigValueError) as info:
        TranslationSearchConfig(shortlist_frequent=-1, shortlist_per_source=-2)
    assert str(info.value) == (
        "shortlist_frequent=-1: must be >= 0 (most frequent target pieces always kept); "
        "shortlist_per_source=-2: must be >= 0 (target pieces per source piece)"
    )
    with pytest.raises(ConfigValueError, match=r"^per_source=0: must be >= 1"):
        LexiconConfig(model_dir="m", per_source=0)


def test_asking_for_more_per_source_than_the_lexicon_lists_is_an_error():
    with pytest.raises(NmtError, match="search.shortlist_per_source=4, but the lexicon lists 3"):
        Shortlist(tiny_lexicon(), frequent=10, per_source=4)


# ------------------------------------------------------------------------------------------ the file
def test_the_file_round_trips(tmp_path):
    path = save_lexicon(tiny_lexicon(), tmp_path)
    assert path == tmp_path / LEXICON_FILE and not list(tmp_path.glob(".tmp-*"))
    loaded = load_lexicon(tmp_path, (8, 8))
    assert loaded.table.tolist() == TINY_TABLE and loaded.frequent.tolist() == TINY_FREQUENT
    assert load_lexicon(tmp_path / "elsewhere", (8, 8)) is None  # an optional file


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_bytes(b"not a lexicon"), "not a readable lexicon"),
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "not a readable lexicon"),
        (lambda path: np.savez(path, table=np.zeros((8, 1), object)), "not a readable lexicon"),
        (lambda path: np.savez(path, version=1, table=np.zeros((8, 1), np.int32)), "not a readable lexicon"),
    ],
)
def test_a_damaged_lexicon_file_is_an_error_naming_it(tmp_path, write, message):
    path = save_lexicon(tiny_lexicon(), tmp_path)
    write(path)
    with pytest.raises(NmtError, match=f"{path}: {message}.*nmt lexicon model_dir="):
        load_lexicon(tmp_path, (8, 8))


def test_a_lexicon_for_other_vocabularies_is_an_error_naming_it(tmp_path):
    path = save_lexicon(tiny_lexicon(), tmp_path)
    with pytest.raises(
        NmtError, match=f"{path}: made for 8 source and 8 target pieces, but the model has 9 and 8"
    ):
        load_lexicon(tmp_path, (9, 8))
    bad = Lexicon(tiny_lexicon().table, np.zeros(8, np.int32))
    save_lexicon(bad, tmp_path)
    with pytest.raises(NmtError, match="not an ordering of the target vocabulary"):
        load_lexicon(tmp_path, (8, 8))


def test_translator_fails_on_a_corrupt_lexicon_and_warns_once_without_one(tmp_path, fixture_translator):
    copy = tmp_path / "model"
    shutil.copytree(FIXTURE, copy)
    (copy / LEXICON_FILE).write_bytes(b"\0" * 10)
    with pytest.raises(NmtError, match=f"{copy / LEXICON_FILE}: not a readable lexicon"):
        Translator.from_dir(copy, device="cpu")
    (copy / LEXICON_FILE).unlink()
    translator = Translator.from_dir(copy, device="cpu")
    on = TranslationSearchConfig(beam_size=3, shortlist=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = translator.translate(PROBES, on)
        translator.translate(PROBES, on)
    assert [str(w.message) for w in caught] == [
        f"{copy}: no {LEXICON_FILE}, so search.shortlist=true decodes over the full vocabulary; add one with "
        f"`nmt lexicon model_dir={copy}`"
    ]
    full = fixture_translator.translate(PROBES, TranslationSearchConfig(beam_size=3))
    assert [t.text for t in first] == [t.text for t in full]


# ------------------------------------------------------------------------------------------ search
@pytest.mark.parametrize(("beam", "nbest"), [(1, 1), (5, 5), (3, 1)])
def test_a_shortlist_of_the_whole_vocabulary_searches_exactly_as_the_full_vocabulary(
    fixture_translator, beam, nbest
):
    cfg = SearchConfig(beam_size=beam, nbest=nbest, batch_tokens=7)  # several batches
    src_ids = probe_ids(fixture_translator)
    shortlist = full_shortlist(fixture_translator)
    model = fixture_translator.model
    for candidate in (model, Ensemble([model, model])):
        want = decode_ids(candidate, src_ids, cfg, CPU)
        assert_same_hypotheses(decode_ids(candidate, src_ids, cfg, CPU, shortlist=shortlist), want)


def test_translator_applies_the_shortlist_that_the_search_config_asks_for(fixture_translator):
    tok = fixture_translator.tokenizer
    full = full_shortlist(fixture_translator).lexicon
    translator = Translator(fixture_translator.model, tok, fixture_translator.config, CPU, lexicon=full)
    on = TranslationSearchConfig(
        beam_size=5, nbest=5, shortlist=True, shortlist_frequent=tok.tgt_vocab_size, shortlist_per_source=1
    )
    off = TranslationSearchConfig(beam_size=5, nbest=5)
    assert translator.shortlist(off) is None and translator.shortlist(SearchConfig()) is None
    assert translator.shortlist(on) == Shortlist(full, tok.tgt_vocab_size, 1)
    got, want = translator.translate(PROBES, on), fixture_translator.translate(PROBES, off)
    assert [(t.hypotheses, [h.score for h in t.nbest]) for t in got] == [
        (t.hypotheses, [h.score for h in t.nbest]) for t in want
    ]
    small = TranslationSearchConfig(beam_size=5, shortlist=True, shortlist_frequent=6, shortlist_per_source=0)
    ids = set(Shortlist(full, 6, 0).ids(torch.tensor([[5]])).tolist())  # specials + the 6 most frequent
    for result in translator.translate(PROBES, small):
        assert set(result.nbest[0].tokens) <= ids  # real ids, drawn from the shortlist


def test_shortlist_log_probs_are_the_full_ones_restricted_and_renormalised(fixture_translator):
    model = fixture_translator.model
    ids = torch.tensor([0, 1, 2, 3, 7, 11, 20, 29])
    restricted = ShortlistModel(model, ids)
    src = torch.tensor(probe_ids(fixture_translator)[1]).unsqueeze(0)
    lengths = torch.tensor([src.size(1)])
    with torch.inference_mode():
        enc = model.encode(src, lengths)
        state_full = state_short = model.init_decoder_state(enc)
        local, real = torch.tensor([BOS_ID]), torch.tensor([BOS_ID])
        for position in (4, 6, 5):  # feed real ids 7, 20, 11 after BOS
            full, state_full, attention_full = model.decode_step(real, state_full, enc)
            short_logits, _, _ = restricted.decode_step_logits(local, state_short, enc)
            short, state_short, attention_short = restricted.decode_step(local, state_short, enc)
            assert torch.equal(short, short_logits.log_softmax(-1))
            kept = full[:, ids]
            torch.testing.assert_close(short, kept - kept.logsumexp(dim=-1, keepdim=True), rtol=0, atol=1e-6)
            assert torch.equal(attention_short, attention_full) and torch.equal(
                state_short.hidden, state_full.hidden
            )
            local, real = torch.tensor([position]), ids[position : position + 1]


def test_int8_models_keep_an_int8_output_layer_on_the_shortlist(fixture_translator):
    """The shortlisted output layer of an int8 model is int8 too, holding the full layer's int8 rows: a shortlist of
    the whole vocabulary gives the int8 model's own hypotheses and scores."""
    int8 = quantize_int8(fixture_translator.model)
    ids = torch.tensor([0, 1, 2, 3, 7, 11, 20, 29])
    rows = output_rows(int8.output_layer, ids)
    assert isinstance(rows, torch.ao.nn.quantized.dynamic.Linear)
    assert torch.equal(rows.weight().int_repr(), int8.output_layer.weight().int_repr()[ids])
    pre_output = torch.randn(4, int8.output_layer.in_features, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rows(pre_output), int8.output_layer(pre_output)[:, ids], rtol=0, atol=1e-6)

    src_ids = probe_ids(fixture_translator)
    cfg = SearchConfig(beam_size=5, nbest=5)
    want = decode_ids(int8, src_ids, cfg, CPU)
    got = decode_ids(int8, src_ids, cfg, CPU, shortlist=full_shortlist(fixture_translator))
    assert_same_hypotheses(got, want)


# ------------------------------------------------------------------------------------------ who writes it
def test_training_writes_the_lexicon_of_its_training_pairs_and_the_command_rebuilds_it(tmp_path):
    cfg = digit_config(tmp_path, max_steps=2, validate_every=2)
    train(cfg)
    run = Path(cfg.run_dir)
    written = (run / LEXICON_FILE).read_bytes()
    prepared = load_prepared(run)  # the tokenized split that training read
    tok, split = prepared.tokenizer, prepared.splits["train"]
    vocab = (tok.src_vocab_size, tok.tgt_vocab_size)
    src, tgt = list(split["src_ids"]), list(split["tgt_ids"])
    want = lexicon_from_pairs(src, tgt, vocab, LexiconSettings().per_source)
    got = load_lexicon(run, vocab)
    assert np.array_equal(got.table, want.table) and np.array_equal(got.frequent, want.frequent)

    rows = np.arange(50) * len(split) // 50  # max_pairs: evenly spaced rows
    sample = lexicon_from_split(split, vocab, LexiconSettings(per_source=5, max_pairs=50))
    reference = lexicon_from_pairs([src[r] for r in rows], [tgt[r] for r in rows], vocab, 5)
    assert np.array_equal(sample.table, reference.table) and np.array_equal(
        sample.frequent, reference.frequent
    )

    summary = (run / "summary.json").read_bytes()
    (run / LEXICON_FILE).unlink()
    lexicon_command(LexiconConfig(model_dir=str(run)))
    assert (run / LEXICON_FILE).read_bytes() == written
    assert (run / "summary.json").read_bytes() == summary  # the model directory keeps its training's summary
    assert not list(run.glob(".tmp-*"))
