"""Dropout with masks from 16-bit draws: the function of nn.Dropout, the mask of a seeded draw."""

import pytest
import torch

from nmt.model.dropout import Dropout, dropout, random_int16


def test_mask_is_the_seeded_int64_draw_read_as_int16():
    x = torch.randn(7, 11, 13)  # 1,001 elements: the last int64 word is cut
    torch.manual_seed(3)
    out = dropout(x, 0.25, training=True)
    torch.manual_seed(3)
    words = torch.empty(251, dtype=torch.int64).random_(-(2**63), None)
    # round(0.25 * 2**16) = 16384 dropped values: the int16 draws below 16384 - 32768
    keep = words.view(torch.int16)[:1001].view(7, 11, 13) >= -16384
    assert torch.equal(out, torch.where(keep, x * (4.0 / 3.0), torch.zeros(())))


def test_int16_draws_cover_every_value_uniformly():
    torch.manual_seed(0)
    draws = random_int16(4 * 65536 * 4 + 1).long() + 32768  # not a multiple of 4: the tail is cut
    counts = torch.bincount(draws, minlength=65536).float()
    assert draws.numel() == 4 * 65536 * 4 + 1 and counts.numel() == 65536
    # each lane of the int64 word is uniform too: 2 of the 4 int16 lanes always 0 or a sign bit would show here
    lanes = draws[:-1].view(-1, 4).float().mean(dim=0)
    assert (lanes - 32767.5).abs().max() < 6 * 18918 / (65536**0.5)
    # 16 draws per value on average: the fullest and the emptiest are within a Poisson spread of that
    assert counts.min() >= 1 and counts.max() <= 45


def test_kept_fraction_and_scale():
    x = torch.full((400_000,), 3.0)
    out = dropout(x, 0.3, training=True)
    kept = out != 0
    # p is rounded to 19661 / 2**16 and survivors scaled by 2**16 / 45875, so the expectation is exactly 3
    scaled = torch.tensor(3.0) * torch.tensor(65536 / 45875)  # both float32, as in the layer
    assert torch.equal(out[kept], scaled.expand(int(kept.sum())))
    assert abs(kept.float().mean().item() - 0.7) < 6 * (0.3 * 0.7 / x.numel()) ** 0.5


def test_gradient_is_the_mask_times_the_scale():
    x = torch.rand(50, 40) + 0.5  # nonzero, so out != 0 marks the kept elements
    x.requires_grad_(True)
    upstream = torch.randn(50, 40)
    out = dropout(x, 0.4, training=True)
    out.backward(upstream)
    kept = (out != 0).float()
    assert torch.equal(x.grad, upstream * (kept * (65536 / (65536 - round(0.4 * 65536)))))


def test_identity_in_eval_and_at_zero():
    x = torch.randn(5, 6)
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert dropout(x, 0.0, training=True) is x


def test_p_one_drops_everything():
    assert torch.equal(dropout(torch.randn(4, 4), 1.0, training=True), torch.zeros(4, 4))


def test_p_below_half_a_level_keeps_everything():
    x = torch.randn(1000)
    assert torch.equal(dropout(x, 2.0**-18, training=True), x)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_rejects_a_probability_outside_0_1(p):
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(p)


def test_train_mode_draws_a_fresh_mask_each_call():
    layer = Dropout(0.5).train()
    x = torch.ones(1000)
    assert not torch.equal(layer(x), layer(x))
    assert repr(layer) == "Dropout(p=0.5)"
