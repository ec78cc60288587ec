import pytest
import torch

from nmt.train.ema import WeightAverage, ema_decay_at


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_decay_warms_up_towards_its_ceiling():
    assert ema_decay_at(1, 0.999) == 2 / 11
    assert ema_decay_at(8, 0.5) == 0.5
    assert ema_decay_at(10_000, 0.999) == 0.999


def test_average_equals_the_hand_computed_one_after_each_update():
    model = tiny_model()
    average = WeightAverage(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for step in range(1, 5):
        optimizer.zero_grad()
        model(torch.full((4, 3), float(step))).pow(2).sum().backward()
        optimizer.step()
        average.update(model, step)
        d = min(0.5, (1 + step) / (10 + step))  # 2/11, 3/12, 4/13, then 0.5
        for name, value in model.state_dict().items():
            expected[name] = d * expected[name] + (1 - d) * value
    for name, value in average.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=0)  # lerp rounds once
    assert not torch.equal(average.state_dict()["weight"], model.weight)


def test_swapped_into_validates_the_average_then_restores_the_trained_weights():
    model = tiny_model()
    average = WeightAverage(model, decay=0.9)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for value in average.average.values():
            value.fill_(0.25)
    with average.swapped_into(model):
        assert torch.equal(model.weight, torch.full((2, 3), 0.25))
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name])


def test_state_round_trip_and_missing_keys():
    model = tiny_model()
    average = WeightAverage(model, decay=0.9)
    average.update(torch.nn.Linear(3, 2), 1)
    other = WeightAverage(model, decay=0.9)
    other.load_state_dict(average.state_dict())
    for name, value in average.state_dict().items():
        assert torch.equal(other.state_dict()[name], value)
    with pytest.raises(KeyError, match="bias"):
        other.load_state_dict({"weight": torch.zeros(2, 3)})
