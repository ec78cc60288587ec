import math
import shutil

import pytest
import torch

from nmt.train.loss import loss_extension, sequence_loss


@pytest.fixture(params=[False, True], ids=["python", "compiled"])
def compiled(request: pytest.FixtureRequest) -> bool:
    """Each test runs on the Python loss and on the compiled one (where a compiler and ninja exist: with them, a
    failed build is a failure)."""
    if request.param:
        if shutil.which("c++") is None or shutil.which("ninja") is None:
            pytest.skip("the compiled loss needs a C++ compiler and ninja")
        assert loss_extension() is not None
    return request.param


def test_no_smoothing_equals_cross_entropy_over_non_pad(compiled: bool) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    target = torch.tensor([[4, 2, 0], [1, 0, 0]])
    sums = sequence_loss(logits, target, 0.0, pad_id=0, compiled=compiled)
    expected = torch.nn.functional.cross_entropy(
        logits.view(-1, 5), target.view(-1), ignore_index=0, reduction="sum"
    )
    assert torch.allclose(sums.loss, expected) and torch.allclose(sums.nll, expected)
    assert int(sums.n_tokens) == 3


def test_smoothing_matches_hand_computation(compiled: bool) -> None:
    logits = torch.zeros(1, 1, 4)  # uniform: -log p = log 4 for every class
    target = torch.tensor([[2]])
    sums = sequence_loss(logits, target, 0.1, pad_id=0, compiled=compiled)
    assert math.isclose(float(sums.loss), math.log(4), rel_tol=1e-6)
    logits = torch.tensor([[[0.0, 0.0, 3.0, 0.0]]])
    log_p = torch.log_softmax(logits[0, 0], dim=-1)
    expected = 0.9 * -log_p[2] + 0.1 * -log_p.mean()
    assert math.isclose(
        float(sequence_loss(logits, target, 0.1, pad_id=0, compiled=compiled).loss),
        float(expected),
        rel_tol=1e-6,
    )


def test_padding_contributes_nothing(compiled: bool) -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 6)
    target = torch.tensor([[3, 5, 0, 0]])
    changed = logits.clone()
    changed[0, 2:] = 100.0
    a, b = sequence_loss(logits, target, 0.2, 0, compiled), sequence_loss(changed, target, 0.2, 0, compiled)
    assert torch.equal(a.loss, b.loss)


def test_equals_torch_cross_entropy_with_label_smoothing_and_its_gradient(compiled: bool) -> None:
    # torch's label_smoothing spreads eps over every class, the target's included: the same q as ours
    torch.manual_seed(2)
    logits = torch.randn(3, 7, 11, requires_grad=True)
    target = torch.randint(1, 11, (3, 7))
    target[0, 5:] = 0
    target[2, 3:] = 0
    sums = sequence_loss(logits, target, 0.1, pad_id=0, compiled=compiled)
    (grad,) = torch.autograd.grad(sums.loss, logits)
    reference = logits.detach().clone().requires_grad_(True)
    expected = torch.nn.functional.cross_entropy(
        reference.view(-1, 11), target.view(-1), ignore_index=0, reduction="sum", label_smoothing=0.1
    )
    expected.backward()
    assert torch.allclose(sums.loss, expected, rtol=1e-6)
    assert torch.allclose(grad, reference.grad, atol=1e-6)
    assert int(sums.n_tokens) == 21 - 2 - 4
    assert not sums.nll.requires_grad


def test_gradient_passes_gradcheck_in_float64(compiled: bool) -> None:
    torch.manual_seed(3)
    target = torch.tensor([[3, 1, 0], [2, 4, 4]])
    for smoothing in (0.0, 0.2):
        logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda x, eps=smoothing: sequence_loss(x, target, eps, pad_id=0, compiled=compiled).loss,
            (logits,),
        )


def test_gradient_is_softmax_minus_smoothed_target(compiled: bool) -> None:
    logits = torch.tensor([[[1.0, 2.0, 0.5, -1.0]]], requires_grad=True)
    target = torch.tensor([[2]])
    sequence_loss(logits, target, 0.2, pad_id=0, compiled=compiled).loss.backward()
    q = torch.full((4,), 0.2 / 4)
    q[2] += 0.8
    assert torch.allclose(logits.grad[0, 0], torch.softmax(logits.detach()[0, 0], -1) - q, atol=1e-7)


def test_probabilities_below_the_smallest_normal_float_move_the_gradient_by_less_than_it():
    """The backward clamps log-probabilities at log(2^-126) (module docstring): with logits spread so that most
    probabilities are subnormal or zero in float32, the gradient still equals softmax minus the target to 2^-126."""
    logits = torch.tensor([[[0.0, -80.0, -90.0, -100.0, -200.0]]], requires_grad=True)
    target = torch.tensor([[1]])
    sequence_loss(logits, target, 0.0, pad_id=0).loss.backward()
    want = torch.softmax(logits.detach()[0, 0].double(), -1)
    want[1] -= 1.0
    tiny = torch.finfo(torch.float32).tiny
    assert (logits.grad[0, 0].double() - want).abs().max() <= tiny
    # p = e^-200 is 0 in float32; clamped, it is the smallest normal float (to the rounding of its logarithm)
    assert logits.grad[0, 0, 4].item() == pytest.approx(tiny, rel=1e-5)


def test_the_compiled_loss_equals_the_python_loss_in_float64(compiled: bool) -> None:
    torch.manual_seed(4)
    logits = (torch.randn(4, 9, 50, dtype=torch.float64) * 5).requires_grad_()
    target = torch.randint(1, 50, (4, 9))
    target[1, 6:] = 0
    target[3, 2:] = 0
    results = []
    for use_compiled in (False, compiled):
        sums = sequence_loss(logits, target, 0.15, pad_id=0, compiled=use_compiled)
        (grad,) = torch.autograd.grad(sums.loss, logits)
        results.append((sums.loss, sums.nll, grad))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_compiled_probabilities_below_the_exp_clamp_move_the_gradient_by_less_than_it(compiled: bool) -> None:
    """The compiled float exp clamps its argument at -87 (nmt/csrc/vector_math.h): a probability below e^-87 gets
    e^-87 (about 1.6e-38) in the gradient instead, and nothing moves by more."""
    logits = torch.tensor([[[0.0, -80.0, -90.0, -100.0, -200.0]]], requires_grad=True)
    target = torch.tensor([[1]])
    sequence_loss(logits, target, 0.0, pad_id=0, compiled=compiled).loss.backward()
    want = torch.softmax(logits.detach()[0, 0].double(), -1)
    want[1] -= 1.0
    bound = math.exp(-87) if compiled else torch.finfo(torch.float32).tiny
    assert (logits.grad[0, 0].double() - want).abs().max() <= bound * 1.001


def test_a_target_outside_the_vocabulary_is_an_error(compiled: bool) -> None:
    logits = torch.zeros(1, 2, 5)
    with pytest.raises(RuntimeError, match="outside the vocabulary|out of bounds"):
        sequence_loss(logits, torch.tensor([[1, 7]]), 0.0, pad_id=0, compiled=compiled)
