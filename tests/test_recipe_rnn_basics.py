"""The chapter's opening arguments: summed vs concatenated one-hots vs an RNN, and vanishing/exploding gradients."""

import numpy as np
import pytest

from nmt.recipes.config import Cell
from nmt.recipes.rnn_basics import (
    collisions,
    concatenated_one_hot,
    decayed_sum,
    digit_runs,
    gradient_norms,
    predict_next,
    summed_one_hot,
    train_linear,
    train_rnn,
)


def test_digit_runs_contain_the_books_examples():
    runs, following = digit_runs(4)
    assert len(runs) == 20
    assert following[runs.index([0, 1, 2, 3])] == 4
    assert following[runs.index([9, 8, 7, 6])] == 5
    assert following[runs.index([1, 0, 9, 8])] == 7  # wraps around mod 10


def test_summed_one_hot_loses_order():
    s = summed_one_hot([[2, 3], [3, 2]])
    assert np.array_equal(s[0], s[1]) and s[0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    runs, following = digit_runs(2)
    pairs = collisions(summed_one_hot(runs), following)
    assert len(pairs) == 10  # every rising run collides with one falling run: [2, 3] → 4 vs [3, 2] → 1
    assert (runs.index([2, 3]), runs.index([3, 2])) in pairs
    _, accuracy = train_linear(summed_one_hot(runs), following)
    assert accuracy == pytest.approx(0.5)  # one of each colliding pair at best


def test_concatenated_one_hot_keeps_order_but_fixes_the_length():
    runs, following = digit_runs(4)
    features = concatenated_one_hot(runs, 4)
    assert features.shape == (20, 40) and collisions(features, following) == []
    _, accuracy = train_linear(features, following)
    assert accuracy == 1.0
    with pytest.raises(ValueError, match="room for 4 digits, got 3"):
        concatenated_one_hot([[1, 2, 3]], 4)


def test_decayed_sum_is_a_fixed_size_state_that_keeps_order():
    assert decayed_sum([2]).tolist() == [0, 0, 0.5, 0, 0, 0, 0, 0, 0, 0]
    assert decayed_sum([2, 3])[[2, 3]].tolist() == [0.25, 0.5]
    assert decayed_sum([3, 2])[[2, 3]].tolist() == [0.5, 0.25]


def test_rnn_handles_order_and_any_length():
    runs, following = [], []
    for length in (2, 3, 4, 5):
        r, f = digit_runs(length)
        runs += r
        following += f
    model, accuracy = train_rnn(runs, following)
    assert accuracy == 1.0
    assert predict_next(model, [[2, 3], [3, 2], [0, 1, 2, 3], [9, 8, 7, 6]]) == [4, 1, 4, 5]


def test_gradients_vanish_in_untrained_cells_and_explode_with_a_large_recurrent_gain():
    for cell in Cell:
        norms = gradient_norms(cell, steps=60)
        assert norms.shape == (60,) and norms[0] > 0
        assert norms[59] < 1e-6 * norms[0]  # 60 steps back: vanished
    kept = gradient_norms(Cell.lstm, steps=60, gate_bias=3.0)
    assert kept[59] > 0.05 * kept[0]  # an open forget gate carries the gradient back
    exploding = gradient_norms(Cell.rnn, steps=60, recurrent_gain=3.0)
    assert exploding[59] > 1e6 * exploding[0]
    assert np.array_equal(gradient_norms(Cell.gru, steps=10), gradient_norms(Cell.gru, steps=10))  # seeded
