"""Attention: normalisation, masking, the scores' formulas, keys computed once."""

import pytest
import torch

from nmt.config import AttentionType
from nmt.model.attention import BahdanauAttention, MultiplicativeAttention, build_attention

QUERY, KEY, ATT = 6, 8, 5
LENGTHS = torch.tensor([5, 3, 1])


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(3, QUERY, generator=gen)
    states = torch.randn(3, 5, KEY, generator=gen)
    mask = torch.arange(5).unsqueeze(0) < LENGTHS.unsqueeze(1)
    return query, states, mask


@pytest.mark.parametrize("kind", list(AttentionType))
def test_weights_are_a_distribution_over_real_tokens(kind: AttentionType) -> None:
    torch.manual_seed(0)
    attention = build_attention(kind, QUERY, KEY, ATT)
    query, states, mask = _inputs()
    context, weights = attention(query, attention.project_keys(states), states, mask)
    assert context.shape == (3, KEY) and weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))  # exactly 0, not merely small
    assert (weights[mask] > 0).all()
    assert weights[2, 0] == 1.0  # a one-token sentence attends to it fully
    torch.testing.assert_close(context, torch.einsum("bs,bsh->bh", weights, states))


@pytest.mark.parametrize("kind", list(AttentionType))
def test_beams_share_their_sentences_keys(kind: AttentionType) -> None:
    """Three queries per sentence against one copy of its keys give what each query gets against a copy of its
    own (the encoding repeated per beam, as beam search used to hold it), row for row."""
    torch.manual_seed(0)
    attention = build_attention(kind, QUERY, KEY, ATT)
    _, states, mask = _inputs()
    query = torch.randn(9, QUERY, generator=torch.Generator().manual_seed(1))  # sentence i: rows 3i..3i+2
    context, weights = attention(query, attention.project_keys(states), states, mask)
    per_row = states.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)
    expected = attention(query, attention.project_keys(per_row[0]), *per_row)
    torch.testing.assert_close(context, expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(weights, expected[1], rtol=0, atol=1e-6)
    assert torch.equal(weights[7, 1:], torch.zeros(4))  # rows 6..8 are the one-token sentence's
    with pytest.raises(ValueError, match="7 query rows do not divide into the 3 sentences"):
        attention(query[:7], attention.project_keys(states), states, mask)


@pytest.mark.parametrize("kind", list(AttentionType))
def test_padding_content_has_no_effect(kind: AttentionType) -> None:
    torch.manual_seed(0)
    attention = build_attention(kind, QUERY, KEY, ATT)
    query, states, mask = _inputs()
    garbage = states.masked_fill(~mask.unsqueeze(-1), 1e4)  # huge values where the padding is
    expected = attention(query, attention.project_keys(states), states, mask)
    got = attention(query, attention.project_keys(garbage), garbage, mask)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", list(AttentionType))
def test_masking_in_bfloat16(kind: AttentionType) -> None:
    torch.manual_seed(0)
    attention = build_attention(kind, QUERY, KEY, ATT).to(torch.bfloat16)
    query, states, mask = (t.to(torch.bfloat16) if t.is_floating_point() else t for t in _inputs())
    _, weights = attention(query, attention.project_keys(states), states, mask)
    assert weights.dtype == torch.bfloat16 and torch.isfinite(weights).all()
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(3), atol=1e-2, rtol=0)


def test_bahdanau_score_formula() -> None:
    torch.manual_seed(0)
    attention = BahdanauAttention(QUERY, KEY, ATT)
    query, states, mask = _inputs()
    _, weights = attention(query, attention.project_keys(states), states, mask)
    w, u, b, v = (
        attention.query_layer.weight,
        attention.key_layer.weight,
        attention.key_layer.bias,
        attention.energy_layer.weight[0],
    )
    # e_j = v^T tanh(W s + U h_j + b), softmax over the real tokens of each row
    for row, length in enumerate(LENGTHS.tolist()):
        energies = torch.stack(
            [v @ torch.tanh(w @ query[row] + u @ states[row, j] + b) for j in range(length)]
        )
        torch.testing.assert_close(weights[row, :length], torch.softmax(energies, dim=0))


def test_bahdanau_score_is_the_tanh_form_plus_a_constant_per_row() -> None:
    """The score runs in its sigmoid form, 2 v^T sigmoid(2x) = v^T tanh(x) + sum(v): in float64 it equals the
    paper's tanh score shifted by sum(v) at every position, a shift the softmax cancels."""
    torch.manual_seed(0)
    attention = BahdanauAttention(QUERY, KEY, ATT).double()
    query, states, _ = _inputs()
    query, states = query.double(), states.double()
    scores = attention.score(query.unsqueeze(1), attention.project_keys(states)).squeeze(1)
    w, u, b, v = (
        attention.query_layer.weight,
        attention.key_layer.weight,
        attention.key_layer.bias,
        attention.energy_layer.weight[0],
    )
    tanh_form = torch.tanh((query @ w.T).unsqueeze(1) + states @ u.T + b) @ v  # [3, 5]
    torch.testing.assert_close(scores, tanh_form + v.sum(), rtol=0, atol=1e-12)
    assert v.sum().abs() > 1e-3  # the shift is real, so the test tells the two forms apart


def test_general_score_formula() -> None:
    torch.manual_seed(0)
    attention = build_attention(AttentionType.general, QUERY, KEY, ATT)
    query, states, _ = _inputs()
    scores = attention.score(query.unsqueeze(1), attention.project_keys(states))  # one query per sentence
    torch.testing.assert_close(
        scores.squeeze(1), torch.einsum("bq,qk,bsk->bs", query, attention.key_layer.weight, states)
    )


def test_dot_projects_only_when_sizes_differ() -> None:
    same = build_attention(AttentionType.dot, KEY, KEY, ATT)
    assert isinstance(same, MultiplicativeAttention) and sum(p.numel() for p in same.parameters()) == 0
    _, states, _ = _inputs()
    query = torch.randn(3, KEY)
    assert same.project_keys(states) is states
    torch.testing.assert_close(
        same.score(query.unsqueeze(1), states).squeeze(1), torch.einsum("bk,bsk->bs", query, states)
    )

    differ = build_attention(AttentionType.dot, QUERY, KEY, ATT)
    assert differ.key_layer.weight.shape == (QUERY, KEY) and differ.key_layer.bias is None
    assert build_attention(AttentionType.general, KEY, KEY, ATT).key_layer.weight.shape == (KEY, KEY)


def test_bahdanau_step_does_not_touch_the_key_layer() -> None:
    attention = BahdanauAttention(QUERY, KEY, ATT)
    query, states, mask = _inputs()
    keys = attention.project_keys(states)
    calls = []
    attention.key_layer.register_forward_hook(lambda *_: calls.append(1))
    for _ in range(4):
        attention(query, keys, states, mask)
    assert calls == []
