"""Greedy and beam search against a tiny fake model whose search space can be enumerated exhaustively."""

from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from torch import Tensor

from nmt.config import LengthNorm, ModelConfig, SearchConfig
from nmt.errors import NmtError
from nmt.search import (
    Hypothesis,
    LogitsDecodingModel,
    _compiled_choice,
    _reference_choice,
    _WorkingSet,
    beam_search,
    choice_extension,
    greedy_search,
    search,
)
from nmt.vocab import BOS_ID, EOS_ID, PAD_ID

# A machine without a C++ compiler or ninja chooses from the log-probs; with them, a failed build is a failure.
needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None or shutil.which("ninja") is None,
    reason="the compiled choice needs a C++ compiler and ninja",
)
VOCAB = 6  # PAD, UNK, BOS, EOS and two ordinary tokens: 3 producible tokens besides EOS
WIDE = 128  # more than the 1 + 3 + 9 + 27 + 81 = 121 outputs of at most 4 tokens


@dataclass
class FakeEncoding:
    states: Tensor  # [batch, src_len, dim], zeros on padding
    mask: Tensor  # [batch, src_len]

    def index_select(self, index: Tensor) -> FakeEncoding:
        return FakeEncoding(self.states.index_select(0, index), self.mask.index_select(0, index))


@dataclass
class FakeState:
    hidden: Tensor  # [batch, dim]
    step: Tensor  # [batch]

    def index_select(self, index: Tensor) -> FakeState:
        return FakeState(self.hidden.index_select(0, index), self.step.index_select(0, index))


class FakeModel:
    """Next-token logits = table[step, previous token] + a term from a dot-product attention over the source."""

    def __init__(self, seed: int = 0, table: Tensor | None = None, source_weight: float = 1.0, dim: int = 8):
        gen = torch.Generator().manual_seed(seed)
        self.embedding = torch.randn(VOCAB, dim, generator=gen)
        self.output = torch.randn(dim, VOCAB, generator=gen)
        self.mix = torch.randn(dim, dim, generator=gen) / math.sqrt(dim)
        self.table = 2 * torch.randn(8, VOCAB, VOCAB, generator=gen) if table is None else table
        self.source_weight = source_weight

    def encode(self, src: Tensor, src_lengths: Tensor) -> FakeEncoding:
        mask = torch.arange(src.size(1)).unsqueeze(0) < src_lengths.unsqueeze(1)
        return FakeEncoding(self.embedding[src] * mask.unsqueeze(2), mask)

    def init_decoder_state(self, enc: FakeEncoding) -> FakeState:
        hidden = enc.states.sum(1) / enc.mask.sum(1, keepdim=True)
        return FakeState(hidden, torch.zeros(hidden.size(0), dtype=torch.long))

    def decode_step(
        self, prev: Tensor, state: FakeState, enc: FakeEncoding
    ) -> tuple[Tensor, FakeState, Tensor]:
        # one encoding per sentence, `group` consecutive state rows (its beams) per sentence, as in Seq2Seq
        group = prev.size(0) // max(enc.states.size(0), 1)
        states, mask = enc.states.repeat_interleave(group, 0), enc.mask.repeat_interleave(group, 0)
        query = state.hidden + self.embedding[prev]
        energy = (states @ query.unsqueeze(2)).squeeze(2).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(energy, dim=1)
        context = (weights.unsqueeze(1) @ states).squeeze(1)
        step = state.step.clamp(max=self.table.size(0) - 1)
        logits = self.table[step, prev] + self.source_weight * ((query + context) @ self.output)
        new_state = FakeState(torch.tanh((state.hidden + context) @ self.mix), state.step + 1)
        return torch.log_softmax(logits, dim=1), new_state, weights


class FakeLogitsModel(FakeModel):
    """FakeModel that also gives its logits: greedy search chooses from them in compiled code."""

    def decode_step_logits(
        self, prev: Tensor, state: FakeState, enc: FakeEncoding
    ) -> tuple[Tensor, FakeState, Tensor]:
        # log_softmax is shift-invariant: the log-probs are logits whose log_softmax is decode_step's
        return self.decode_step(prev, state, enc)


def batch(lengths: list[int], seed: int = 1) -> tuple[Tensor, Tensor]:
    """Random source ids (no specials but EOS at the end), PAD-padded: [batch, max_len], [batch]."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD_ID)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(1, VOCAB, (n - 1,), generator=gen)
        src[i, n - 1] = EOS_ID
    return src, torch.tensor(lengths)


def norm(length: int, cfg: SearchConfig) -> float:
    if cfg.length_norm == LengthNorm.gnmt:
        return ((5 + length) / 6) ** cfg.alpha
    return float(length) if cfg.length_norm == LengthNorm.average else 1.0


def banned_by_ngram(history: list[int], n: int) -> set[int]:
    t = len(history)
    if n == 0:
        return set()
    return {history[j + n - 1] for j in range(t - n + 1) if history[j : j + n - 1] == history[t - n + 1 :]}


def allowed(history: list[int], row: list[float], max_len: int, cfg: SearchConfig) -> dict[int, float]:
    """The search rules written out plainly: next token -> its log-prob."""
    if len(history) >= max_len:
        return {EOS_ID: row[EOS_ID]}
    banned = {PAD_ID, BOS_ID} | banned_by_ngram(history, cfg.no_repeat_ngram)
    options = {tok: row[tok] for tok in range(VOCAB) if tok not in banned}
    if len(history) < cfg.min_len and len(options) > 1:
        del options[EOS_ID]
    return options


def exhaustive(
    model: FakeModel, src: Tensor, length: int, cfg: SearchConfig
) -> list[tuple[float, float, list[int]]]:
    """Every output the rules allow for one sentence: (score, log_prob, tokens), best first."""
    max_len = math.floor(cfg.max_len_a * length + cfg.max_len_b)
    enc = model.encode(src[None, :length], torch.tensor([length]))
    outputs = []

    def visit(history: list[int], log_prob: float, state: FakeState, prev: int) -> None:
        log_probs, state, _ = model.decode_step(torch.tensor([prev]), state, enc)
        for tok, lp in allowed(history, log_probs[0].tolist(), max_len, cfg).items():
            if tok == EOS_ID:
                outputs.append(((log_prob + lp) / norm(len(history) + 1, cfg), log_prob + lp, history))
            else:
                visit([*history, tok], log_prob + lp, state, tok)

    visit([], 0.0, model.init_decoder_state(enc), BOS_ID)
    return sorted(outputs, key=lambda o: -o[0])


def plain_beam(
    model: FakeModel, src: Tensor, length: int, cfg: SearchConfig
) -> list[tuple[float, list[int], Tensor]]:
    """One sentence, one hypothesis at a time, no early stop: only `beam_size` finished ends it.

    Returns (score, tokens, attention [len(tokens) + 1, length]) best first; each hypothesis carries its own
    attention rows, the weights of the step that chose each of its tokens and of its EOS.
    """
    max_len = math.floor(cfg.max_len_a * length + cfg.max_len_b)
    enc = model.encode(src[None, :length], torch.tensor([length]))
    alive = [([], [], 0.0, model.init_decoder_state(enc), BOS_ID)]
    finished: list[tuple[float, list[int], Tensor]] = []
    while alive and len(finished) < cfg.beam_size:
        candidates = []
        for history, rows, log_prob, state, prev in alive:
            log_probs, new_state, weights = model.decode_step(torch.tensor([prev]), state, enc)
            for tok, lp in allowed(history, log_probs[0].tolist(), max_len, cfg).items():
                candidates.append((log_prob + lp, history, [*rows, weights[0]], tok, new_state))
        candidates.sort(key=lambda c: -c[0])
        alive = []
        for rank, (log_prob, history, rows, tok, state) in enumerate(candidates[: 2 * cfg.beam_size]):
            if tok == EOS_ID and rank < cfg.beam_size:
                finished.append((log_prob / norm(len(history) + 1, cfg), history, torch.stack(rows)))
            elif tok != EOS_ID and len(alive) < cfg.beam_size:
                alive.append(([*history, tok], rows, log_prob, state, tok))
    return sorted(finished, key=lambda f: -f[0])[: cfg.nbest]


RULES = [
    SearchConfig(length_norm=LengthNorm.none, max_len_a=0.5, max_len_b=2),
    SearchConfig(length_norm=LengthNorm.average, max_len_a=0.5, max_len_b=2, min_len=2),
    SearchConfig(length_norm=LengthNorm.gnmt, alpha=0.6, max_len_a=0.0, max_len_b=4, no_repeat_ngram=2),
    SearchConfig(length_norm=LengthNorm.gnmt, alpha=1.5, max_len_a=0.5, max_len_b=2, no_repeat_ngram=1),
]
LENGTHS = [2, 4, 5]  # max output lengths 3, 4, 4 with a=0.5, b=2


@pytest.mark.parametrize("rules", RULES)
def test_wide_beam_is_exhaustive_and_narrow_never_better(rules: SearchConfig) -> None:
    model = FakeModel(seed=3)
    src, lengths = batch(LENGTHS)
    wide = beam_search(model, src, lengths, replace(rules, beam_size=WIDE, nbest=5))
    narrow = {k: beam_search(model, src, lengths, replace(rules, beam_size=k)) for k in (1, 2, 3)}
    for i, length in enumerate(LENGTHS):
        best = exhaustive(model, src[i], length, rules)[:5]
        assert [h.tokens for h in wide[i]] == [tokens for _, _, tokens in best]
        for h, (score, log_prob, _) in zip(wide[i], best):
            assert h.score == pytest.approx(score, abs=1e-5)
            assert h.log_prob == pytest.approx(log_prob, abs=1e-5)
        for k, results in narrow.items():
            assert results[i][0].score <= best[0][0] + 1e-5, k


@pytest.mark.parametrize("rules", RULES)
def test_early_stop_changes_nothing(rules: SearchConfig) -> None:
    model = FakeModel(seed=5)
    src, lengths = batch(LENGTHS, seed=2)
    for beam in (2, 3):
        cfg = replace(rules, beam_size=beam, nbest=beam)
        results = beam_search(model, src, lengths, cfg)
        for i, length in enumerate(LENGTHS):
            expected = plain_beam(model, src[i], length, cfg)
            assert [h.tokens for h in results[i]] == [tokens for _, tokens, _ in expected]
            assert [h.score for h in results[i]] == pytest.approx([s for s, _, _ in expected], abs=1e-5)


@pytest.mark.parametrize("rules", RULES)
def test_nbest_and_attention_match_the_plain_reference(rules: SearchConfig) -> None:
    # beams reorder at every step and sentences finish at different steps, so each hypothesis's attention rows
    # must be followed back through the beams it came from
    model = FakeModel(seed=19)
    lengths = [6, 2, 9, 4, 3]
    src, lengths_t = batch(lengths, seed=5)
    for beam in (1, 3, 5):
        cfg = replace(rules, beam_size=beam, nbest=beam, max_len_a=1.0, max_len_b=2)
        results = search(model, src, lengths_t, cfg)
        without = search(model, src, lengths_t, cfg, attention=False)
        for i, length in enumerate(lengths):
            expected = plain_beam(model, src[i], length, cfg)
            assert [h.tokens for h in results[i]] == [tokens for _, tokens, _ in expected]
            assert [h.score for h in results[i]] == pytest.approx([s for s, _, _ in expected], abs=1e-5)
            for h, (_, _, attention) in zip(results[i], expected):
                torch.testing.assert_close(h.attention, attention, atol=1e-6, rtol=0)
            # not keeping the attention changes nothing else, to the bit
            assert [(h.tokens, h.score, h.log_prob) for h in without[i]] == [
                (h.tokens, h.score, h.log_prob) for h in results[i]
            ]
            assert all(h.attention is None for h in without[i])


def test_nbest_sorted_distinct_and_consistent() -> None:
    cfg = SearchConfig(beam_size=6, nbest=6, max_len_a=0.0, max_len_b=4)
    src, lengths = batch([3, 6, 4, 2])
    for sentence, hyps in enumerate(beam_search(FakeModel(seed=7), src, lengths, cfg)):
        assert len(hyps) == 6
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 6
        for h in hyps:
            assert h.score == pytest.approx(h.log_prob / ((5 + len(h.tokens) + 1) / 6) ** cfg.alpha, rel=1e-6)
            assert h.attention.shape == (len(h.tokens) + 1, lengths[sentence])
            assert not {PAD_ID, BOS_ID, EOS_ID} & set(h.tokens)


def length_table() -> Tensor:
    """Log-probs by (step, previous token): EOS first has p=.5; [4, 4] has p=.45*.9*.9 (log-prob -1.01)."""
    table = torch.full((8, VOCAB, VOCAB), math.log(1e-4))
    table[0, BOS_ID, EOS_ID], table[0, BOS_ID, 4] = math.log(0.5), math.log(0.45)
    table[1, 4, 4], table[2, 4, EOS_ID] = math.log(0.9), math.log(0.9)
    return table


def test_length_penalty_changes_the_ranking() -> None:
    model = FakeModel(table=length_table(), source_weight=0.0)
    src, lengths = batch([3])
    short = SearchConfig(beam_size=4, length_norm=LengthNorm.gnmt, alpha=0.0, max_len_a=0.0, max_len_b=4)
    long = replace(short, alpha=2.0)
    assert beam_search(model, src, lengths, short)[0][0].tokens == []  # -0.69 beats -1.01
    assert beam_search(model, src, lengths, long)[0][0].tokens == [
        4,
        4,
    ]  # -1.01 / (8/6)^2 = -0.57 beats -0.69
    assert exhaustive(model, src[0], 3, short)[0][2] == []
    assert exhaustive(model, src[0], 3, long)[0][2] == [4, 4]
    # average length normalisation prefers the long one too: -1.01 / 3 > -0.69 / 1
    assert beam_search(model, src, lengths, replace(short, length_norm=LengthNorm.average))[0][0].tokens == [
        4,
        4,
    ]


def test_min_and_max_length() -> None:
    model = FakeModel(seed=11)
    src, lengths = batch([2, 3, 7])
    for min_len in (0, 3, 5):
        cfg = SearchConfig(beam_size=3, nbest=3, min_len=min_len, max_len_a=1.0, max_len_b=0)
        for strategy in (greedy_search, beam_search):
            for hyps, length in zip(strategy(model, src, lengths, cfg), lengths.tolist()):
                assert hyps
                for h in hyps:
                    assert min(min_len, length) <= len(h.tokens) <= length  # the maximum wins over min_len
    # a model that never wants EOS runs to exactly floor(a * src_len + b)
    table = torch.zeros(8, VOCAB, VOCAB)
    table[:, :, EOS_ID] = -20.0
    cfg = SearchConfig(beam_size=2, max_len_a=0.5, max_len_b=1)
    results = beam_search(FakeModel(table=table, source_weight=0.0), src, lengths, cfg)
    assert [len(hyps[0].tokens) for hyps in results] == [2, 2, 4]


def test_no_repeat_ngram() -> None:
    # without blocking, this table repeats token 4 forever
    table = torch.zeros(8, VOCAB, VOCAB)
    table[:, :, 4] = 3.0
    table[:, :, EOS_ID] = -5.0
    model = FakeModel(table=table, source_weight=0.0)
    src, lengths = batch([4, 6])
    free = SearchConfig(beam_size=2, max_len_a=1.0, max_len_b=0)
    assert beam_search(model, src, lengths, free)[1][0].tokens == [4] * 6
    for n in (1, 2, 3):
        for strategy in (greedy_search, beam_search):
            for hyps in strategy(model, src, lengths, replace(free, no_repeat_ngram=n, nbest=2)):
                for h in hyps:
                    grams = [tuple(h.tokens[j : j + n]) for j in range(len(h.tokens) - n + 1)]
                    assert len(grams) == len(set(grams)), (n, h.tokens)


@pytest.mark.parametrize("rules", RULES)
def test_beam_one_is_greedy_exactly(rules: SearchConfig) -> None:
    model = FakeModel(seed=13)
    src, lengths = batch([5, 2, 7, 4], seed=3)
    greedy = greedy_search(model, src, lengths, rules)
    beam = beam_search(model, src, lengths, replace(rules, beam_size=1))
    assert [h.tokens for (h,) in search(model, src, lengths, replace(rules, beam_size=1))] == [
        g.tokens for (g,) in greedy
    ]
    for (g,), (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.log_prob == b.log_prob and g.score == b.score
        assert torch.equal(g.attention, b.attention)


def assert_same(one: list[Hypothesis], other: list[Hypothesis]) -> None:
    assert [h.tokens for h in one] == [h.tokens for h in other]
    assert [h.score for h in one] == pytest.approx([h.score for h in other], abs=1e-5)
    assert [h.log_prob for h in one] == pytest.approx([h.log_prob for h in other], abs=1e-5)
    for a, b in zip(one, other):
        torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=0)


@pytest.mark.parametrize("beam", [1, 4])
def test_batching_invariance_and_attention(beam: int) -> None:
    model = FakeModel(seed=17)
    cfg = SearchConfig(beam_size=beam, nbest=beam, max_len_a=1.0, max_len_b=2)
    lengths = [6, 2, 9, 4, 3]
    src, lengths_t = batch(lengths, seed=4)
    batched = search(model, src, lengths_t, cfg)
    for i, n in enumerate(lengths):
        alone = search(model, src[i : i + 1, :n], lengths_t[i : i + 1], cfg)[0]
        assert_same(batched[i], alone)
        for h in batched[i]:
            assert h.attention.shape == (len(h.tokens) + 1, n)
            torch.testing.assert_close(h.attention.sum(1), torch.ones(len(h.tokens) + 1))


def test_bad_settings_are_clear_errors() -> None:
    src, lengths = batch([3])
    with pytest.raises(NmtError, match="nbest"):
        search(FakeModel(), src, lengths, SearchConfig(beam_size=2, nbest=3))
    with pytest.raises(NmtError, match="beam_size"):
        search(FakeModel(), src, lengths, SearchConfig(beam_size=0))


@pytest.mark.parametrize("variant", ["gru-bahdanau", "lstm-luong"])
def test_real_model(variant: str) -> None:
    from nmt.model import Seq2Seq

    rnn, step = variant.split("-")
    torch.manual_seed(0)
    cfg = ModelConfig(
        rnn_type=rnn,
        decoder_step=step,
        emb_size=8,
        hidden_size=8,
        attention_size=8,
        dropout=0.0,
        init_range=0.5,
    )
    model = Seq2Seq(cfg, src_vocab_size=12, tgt_vocab_size=10).eval()
    lengths = torch.tensor([5, 3, 7])
    src = torch.randint(4, 12, (3, 7)) * (torch.arange(7) < lengths.unsqueeze(1))
    rules = SearchConfig(max_len_a=1.0, max_len_b=3)
    greedy = greedy_search(model, src, lengths, rules, compiled=False)
    beam1 = beam_search(model, src, lengths, replace(rules, beam_size=1))
    for (g,), (b,) in zip(greedy, beam1):
        assert g.tokens == b.tokens and g.log_prob == b.log_prob
        assert torch.equal(g.attention, b.attention)
    for (c,), (g,) in zip(greedy_search(model, src, lengths, rules), greedy):  # the compiled choice
        assert c.tokens == g.tokens and c.log_prob == pytest.approx(g.log_prob, abs=1e-5)
        assert torch.equal(c.attention, g.attention)
    results = search(model, src, lengths, replace(rules, beam_size=3, nbest=2))
    for hyps, n in zip(results, lengths.tolist()):
        assert len(hyps) == 2 and hyps[0].score >= hyps[1].score
        for h in hyps:
            assert len(h.tokens) <= n + 3
            assert h.attention.shape == (len(h.tokens) + 1, n)
            torch.testing.assert_close(h.attention.sum(1), torch.ones(len(h.tokens) + 1))


def test_working_set_drops_finished_sentences_when_carrying_them_cost_as_much_as_the_copy() -> None:
    working = _WorkingSet(4, rows_per_sentence=1)
    assert working.compaction(torch.device("cpu")) is None  # nothing finished: never a copy
    assert not working.finish(np.array([False, True, False, False]))
    # one finished sentence against three searching: carried along for steps 1, 2, dropped at the 3rd
    assert working.compaction(torch.device("cpu")) is None
    assert working.compaction(torch.device("cpu")) is None
    assert working.compaction(torch.device("cpu")).tolist() == [0, 2, 3]
    assert working.alive.tolist() == [True, True, True] and working.carried == 0
    assert not working.finish(np.array([True, False, True]))
    assert working.compaction(torch.device("cpu")).tolist() == [1]  # two carried >= one searching
    assert working.finish(np.array([True]))
    beams = _WorkingSet(5, rows_per_sentence=2)  # a finished sentence carries two rows at every step
    assert not beams.finish(np.array([True, False, False, False, False]))
    assert beams.compaction(torch.device("cpu")) is None  # 2 row-steps < 4 searching
    assert beams.compaction(torch.device("cpu")).tolist() == [1, 2, 3, 4]


class CountingModel(FakeModel):
    """FakeModel that records the number of sentences of the encoding at every step."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.sentences: list[int] = []

    def decode_step(
        self, prev: Tensor, state: FakeState, enc: FakeEncoding
    ) -> tuple[Tensor, FakeState, Tensor]:
        self.sentences.append(enc.states.size(0))
        return super().decode_step(prev, state, enc)


def working_set_sizes(finish_steps: list[int]) -> list[int]:
    """The rule of the search module written out plainly, for greedy search (one row per sentence): the working
    set's size at every step, given the step at which each sentence finishes."""
    sizes, size, carried, step = [], len(finish_steps), 0, 0
    while True:
        sizes.append(size)
        searching = sum(s > step for s in finish_steps)
        if searching == 0:
            return sizes
        carried += size - searching
        if size > searching and carried >= searching:
            size, carried = searching, 0
        step += 1


@pytest.mark.parametrize("beam", [1, 3])
def test_search_keeps_finished_sentences_until_the_rule_drops_them(beam: int) -> None:
    model = CountingModel(seed=5)
    lengths = [2, 9, 3, 8, 2, 7, 4, 9]
    src, lengths_t = batch(lengths, seed=6)
    cfg = SearchConfig(beam_size=beam, max_len_a=1.0, max_len_b=4, length_norm=LengthNorm.none)
    results = search(model, src, lengths_t, cfg)
    for i, n in enumerate(lengths):  # carrying finished sentences changes nothing for the others
        assert_same(results[i], search(FakeModel(seed=5), src[i : i + 1, :n], lengths_t[i : i + 1], cfg)[0])
    if beam == 1:  # a sentence is done at the step of its EOS
        finish_steps = [len(hyps[0].tokens) for hyps in results]
        # [8] * 4 + [6] * 5 + [4] * 4 + [2] here; dropping at once would give 8, 8, 6, 6, 6, 6, 6, 5, ...
        assert model.sentences == working_set_sizes(finish_steps)
    else:
        assert model.sentences[0] == len(lengths) and model.sentences == sorted(model.sentences, reverse=True)


# ------------------------------------------------------------------------------------ the compiled choice
NO_HISTORY_RULES = [rules for rules in RULES if not rules.no_repeat_ngram] + [
    SearchConfig(length_norm=LengthNorm.gnmt, alpha=0.6, max_len_a=1.0, max_len_b=1, min_len=3)
]


@needs_compiler
@pytest.mark.parametrize("rules", NO_HISTORY_RULES)
def test_the_compiled_choice_gives_the_reference_greedy_search(rules: SearchConfig, monkeypatch) -> None:
    model = FakeLogitsModel(seed=13)
    assert isinstance(model, LogitsDecodingModel) and not isinstance(FakeModel(), LogitsDecodingModel)
    src, lengths = batch([5, 2, 7, 4, 9, 3], seed=3)
    want = greedy_search(model, src, lengths, rules, compiled=False)
    calls = []
    monkeypatch.setattr("nmt.search._compiled_choice", lambda *a: calls.append(1) or _compiled_choice(*a))
    got = greedy_search(model, src, lengths, rules)
    assert len(calls) == max(len(g.tokens) for (g,) in got) + 1  # every step chose in compiled code
    for (g,), (w,) in zip(got, want):
        assert g.tokens == w.tokens
        assert g.log_prob == pytest.approx(w.log_prob, abs=1e-5) and g.score == pytest.approx(
            w.score, abs=1e-5
        )
        assert torch.equal(g.attention, w.attention)


@needs_compiler
def test_the_compiled_choice_leaves_no_repeat_ngram_to_the_reference(monkeypatch) -> None:
    monkeypatch.setattr("nmt.search._compiled_choice", lambda *a: pytest.fail("chose in compiled code"))
    src, lengths = batch([4, 6])
    greedy_search(
        FakeLogitsModel(), src, lengths, SearchConfig(max_len_a=1.0, max_len_b=0, no_repeat_ngram=2)
    )


def reference_choice(logits: Tensor, log_prob: Tensor, step: int, max_lens: Tensor, cfg: SearchConfig):
    return _reference_choice(
        torch.log_softmax(logits, dim=1), log_prob.clone(), None, step, max_lens, int(max_lens.min()), cfg
    )


@needs_compiler
def test_the_compiled_choice_applies_the_rules_to_a_step() -> None:
    gen = torch.Generator().manual_seed(7)
    rows, vocab = 40, 300
    logits = 4 * torch.randn(rows, vocab, generator=gen, dtype=torch.float64)
    logits[:5, PAD_ID] = 50.0  # the largest logit forbidden: the best allowed one instead
    logits[5:10, BOS_ID] = 50.0
    logits[10:20, EOS_ID] = 50.0  # EOS best: chosen only from the minimum length on
    log_prob = -10 * torch.rand(rows, generator=gen, dtype=torch.float64)
    max_lens = torch.randint(2, 6, (rows,), generator=gen)
    extension = choice_extension()
    assert extension is not None
    for step, min_len in itertools.product(range(6), (0, 3)):
        cfg = SearchConfig(min_len=min_len)
        token, extended = _compiled_choice(logits.float(), log_prob.float(), step, max_lens, cfg)
        want_token, want_extended = reference_choice(logits.float(), log_prob.float(), step, max_lens, cfg)
        assert torch.equal(token, want_token), (step, min_len)
        torch.testing.assert_close(extended, want_extended, rtol=1e-6, atol=1e-5)
        # written out in float64: EOS at the maximum length, else the largest logit outside the forbidden ids
        forbidden = torch.tensor([PAD_ID, BOS_ID] + ([EOS_ID] if step < min_len else []))
        plain = torch.where(
            step >= max_lens, EOS_ID, logits.index_fill(1, forbidden, float("-inf")).argmax(1)
        )
        assert torch.equal(token, plain)
        exact = log_prob + logits.gather(1, plain[:, None])[:, 0] - torch.logsumexp(logits, 1)
        token64, extended64 = extension.greedy_choice(logits, log_prob, max_lens, step, EOS_ID, forbidden)
        assert torch.equal(token64, plain)
        torch.testing.assert_close(extended64, exact, rtol=0, atol=1e-12)


@needs_compiler
def test_the_compiled_choice_takes_the_first_of_equal_logits() -> None:
    logits = torch.zeros(3, 8)
    logits[:, [5, 6]] = 2.0
    logits[2, [PAD_ID, BOS_ID]] = 3.0  # PAD and BOS higher, and forbidden: the scan for the best allowed one
    token, _ = _compiled_choice(logits, torch.zeros(3), 0, torch.full((3,), 9), SearchConfig())
    assert token.tolist() == [5, 5, 5]


@needs_compiler
def test_the_compiled_choice_refuses_arguments_that_do_not_fit() -> None:
    extension = choice_extension()
    assert extension is not None
    logits, log_prob, max_lens = torch.zeros(2, 6), torch.zeros(2), torch.full((2,), 4)
    ids = torch.tensor([PAD_ID])
    with pytest.raises(RuntimeError, match="one running log-prob per row"):
        extension.greedy_choice(logits, torch.zeros(3), max_lens, 0, EOS_ID, ids)
    with pytest.raises(RuntimeError, match="one int64 maximum length per row"):
        extension.greedy_choice(logits, log_prob, max_lens.float(), 0, EOS_ID, ids)
    with pytest.raises(RuntimeError, match="forbidden id 6 outside the vocabulary of 6"):
        extension.greedy_choice(logits, log_prob, max_lens, 0, EOS_ID, torch.tensor([6]))
    with pytest.raises(RuntimeError, match="every one of the 6 tokens is forbidden"):
        extension.greedy_choice(logits, log_prob, max_lens, 0, EOS_ID, torch.arange(6))
    with pytest.raises(RuntimeError, match="EOS id 9 outside"):
        extension.greedy_choice(logits, log_prob, max_lens, 0, 9, ids)
    with pytest.raises(RuntimeError, match="contiguous"):
        extension.greedy_choice(torch.zeros(6, 2).t(), log_prob, max_lens, 0, EOS_ID, ids)
    token, extended = extension.greedy_choice(
        torch.zeros(0, 6), torch.zeros(0), torch.zeros(0).long(), 0, 3, ids
    )
    assert token.shape == extended.shape == (0,)
