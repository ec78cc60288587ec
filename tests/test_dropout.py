"""Dropout with uniform_-drawn masks: the function of nn.Dropout, the mask of a seeded uniform draw."""

import pytest
import torch

from nmt.model.dropout import Dropout, dropout


def test_mask_is_the_seeded_uniform_draw_at_or_above_p():
    x = torch.randn(7, 11, 13)
    torch.manual_seed(3)
    out = dropout(x, 0.25, training=True)
    torch.manual_seed(3)
    keep = torch.rand(7, 11, 13) >= 0.25
    assert torch.equal(out, torch.where(keep, x * (1.0 / 0.75), torch.zeros(())))


def test_kept_fraction_and_scale():
    x = torch.full((400_000,), 3.0)
    out = dropout(x, 0.3, training=True)
    kept = out != 0
    # every survivor is scaled by exactly 1 / (1 - p); the kept share is 0.7 within 6 standard deviations
    assert torch.equal(out[kept], torch.full((int(kept.sum()),), 3.0 * (1.0 / 0.7)))
    assert abs(kept.float().mean().item() - 0.7) < 6 * (0.3 * 0.7 / x.numel()) ** 0.5


def test_gradient_is_the_mask_times_the_scale():
    x = torch.rand(50, 40) + 0.5  # nonzero, so out != 0 marks the kept elements
    x.requires_grad_(True)
    upstream = torch.randn(50, 40)
    out = dropout(x, 0.4, training=True)
    out.backward(upstream)
    kept = (out != 0).float()
    assert torch.equal(x.grad, upstream * (kept * (1.0 / 0.6)))


def test_identity_in_eval_and_at_zero():
    x = torch.randn(5, 6)
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert dropout(x, 0.0, training=True) is x


def test_p_one_drops_everything():
    assert torch.equal(dropout(torch.randn(4, 4), 1.0, training=True), torch.zeros(4, 4))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_rejects_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)


def test_train_mode_draws_a_fresh_mask_each_call():
    layer = Dropout(0.5).train()
    x = torch.ones(1000)
    assert not torch.equal(layer(x), layer(x))
    assert repr(layer) == "Dropout(p=0.5)"
