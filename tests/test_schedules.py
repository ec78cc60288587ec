import math

import torch

from nmt.config import TrainConfig
from nmt.train.schedules import LrSchedule, inverse_sqrt_factor


def optimizer(lr=1.0):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_inverse_sqrt_warms_up_then_decays():
    assert inverse_sqrt_factor(1, 4) == 0.25
    assert inverse_sqrt_factor(4, 4) == 1.0
    assert math.isclose(inverse_sqrt_factor(16, 4), 0.5)


def test_inverse_sqrt_schedule_per_update():
    opt = optimizer()
    schedule = LrSchedule(opt, TrainConfig(schedule="inverse_sqrt", warmup_steps=4))
    lrs = [schedule.lr]
    for _ in range(15):
        opt.step()
        schedule.after_update()
        lrs.append(schedule.lr)
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(lrs[15], 0.5)


def test_plateau_halves_after_patience_and_round_trips():
    opt = optimizer()
    cfg = TrainConfig(schedule="plateau", plateau_factor=0.5, plateau_patience=1, min_lr=0.1)
    schedule = LrSchedule(opt, cfg)
    for bleu in [10.0, 9.0, 8.0]:
        schedule.after_update()  # per-update calls leave plateau alone
        schedule.after_validation(bleu)
    assert schedule.lr == 0.5
    state = schedule.state_dict()
    other = LrSchedule(optimizer(0.5), cfg)
    other.load_state_dict(state)
    other.after_validation(7.0)
    schedule.after_validation(7.0)
    assert other.lr == schedule.lr == 0.5  # one bad validation since the cut: patience not yet exceeded
    for s in (schedule, other):
        s.after_validation(6.0)
    assert other.lr == schedule.lr == 0.25


def test_constant_never_changes():
    opt = optimizer(0.3)
    schedule = LrSchedule(opt, TrainConfig(schedule="constant"))
    for _ in range(5):
        schedule.after_update()
        schedule.after_validation(0.0)
    assert schedule.lr == 0.3 and schedule.state_dict() == {}
