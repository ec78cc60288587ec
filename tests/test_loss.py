import math

import torch

from nmt.train.loss import sequence_loss


def test_no_smoothing_equals_cross_entropy_over_non_pad():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    target = torch.tensor([[4, 2, 0], [1, 0, 0]])
    sums = sequence_loss(logits, target, 0.0, pad_id=0)
    expected = torch.nn.functional.cross_entropy(
        logits.view(-1, 5), target.view(-1), ignore_index=0, reduction="sum"
    )
    assert torch.allclose(sums.loss, expected) and torch.allclose(sums.nll, expected)
    assert int(sums.n_tokens) == 3


def test_smoothing_matches_hand_computation():
    logits = torch.zeros(1, 1, 4)  # uniform: -log p = log 4 for every class
    target = torch.tensor([[2]])
    sums = sequence_loss(logits, target, 0.1, pad_id=0)
    assert math.isclose(float(sums.loss), math.log(4), rel_tol=1e-6)
    logits = torch.tensor([[[0.0, 0.0, 3.0, 0.0]]])
    log_p = torch.log_softmax(logits[0, 0], dim=-1)
    expected = 0.9 * -log_p[2] + 0.1 * -log_p.mean()
    assert math.isclose(
        float(sequence_loss(logits, target, 0.1, pad_id=0).loss), float(expected), rel_tol=1e-6
    )


def test_padding_contributes_nothing():
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 6)
    target = torch.tensor([[3, 5, 0, 0]])
    changed = logits.clone()
    changed[0, 2:] = 100.0
    a, b = sequence_loss(logits, target, 0.2, 0), sequence_loss(changed, target, 0.2, 0)
    assert torch.equal(a.loss, b.loss)
