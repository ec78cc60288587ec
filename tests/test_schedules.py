import math

import torch

from nmt.config import TrainConfig
from nmt.train.schedules import (
    LrSchedule,
    budget_lr,
    budget_progress,
    cosine_decay,
    inverse_sqrt_factor,
    linear_decay,
)


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


def budget_config(schedule, **overrides):
    settings = {"schedule": schedule, "lr": 1.0, "min_lr": 0.0, "warmup_steps": 0, "decay_start": 0.0}
    return TrainConfig(**{**settings, **overrides})


def test_linear_and_cosine_decay_to_min_lr_at_the_end_of_the_budget():
    for p, linear, cosine in [
        (0.0, 1.0, 1.0),
        (0.25, 0.75, 0.8535533905932737),
        (0.5, 0.5, 0.5),
        (1.0, 0.0, 0.0),
    ]:
        assert linear_decay(p) == linear
        assert math.isclose(cosine_decay(p), cosine, abs_tol=1e-15)
    assert linear_decay(1.5) == 0.0 and cosine_decay(-1.0) == 1.0  # clamped
    cfg = TrainConfig(schedule="linear", lr=2e-3, min_lr=1e-5, warmup_steps=4, decay_start=0.0)
    assert budget_lr(cfg, 1, 0.0) == 1e-5 + (2e-3 - 1e-5) * 0.25  # warming up
    assert budget_lr(cfg, 8, 0.5) == 1e-5 + (2e-3 - 1e-5) * 0.5
    assert budget_lr(cfg, 100, 1.0) == 1e-5


def test_budget_progress_is_the_largest_share_of_the_limits_set():
    # update 11 with 10 done: 10 of 100 steps, 60 s of 5 minutes, 10 of 1000 epoch-steps
    assert budget_progress(11, 60.0, max_steps=100, max_minutes=5.0, epoch_steps=1000) == 0.2
    assert budget_progress(11, 60.0, max_steps=20, max_minutes=5.0, epoch_steps=1000) == 0.5
    assert budget_progress(11, 60.0, max_steps=0, max_minutes=0.0, epoch_steps=40) == 0.25  # epochs alone
    assert budget_progress(1, 0.0, max_steps=10, max_minutes=1.0, epoch_steps=10) == 0.0
    assert budget_progress(50, 999.0, max_steps=10, max_minutes=1.0, epoch_steps=10) == 1.0


def test_budget_schedule_sets_the_lr_before_each_update_and_keeps_no_state():
    opt = optimizer()
    schedule = LrSchedule(opt, budget_config("linear", max_steps=4, warmup_steps=2))
    assert schedule.lr == 0.5  # ready for update 1 before any call
    lrs = []
    for step in range(1, 5):
        schedule.before_update(step, (step - 1) / 4)
        lrs.append(schedule.lr)
        opt.step()
        schedule.after_update()
        schedule.after_validation(0.0)  # the budget schedules ignore dev BLEU
    assert lrs == [0.5 * 1.0, 1.0 * 0.75, 0.5, 0.25]
    assert schedule.state_dict() == {}
    fresh = LrSchedule(optimizer(), budget_config("linear", max_steps=4, warmup_steps=2))
    fresh.load_state_dict(schedule.state_dict())
    fresh.before_update(3, 0.5)
    assert fresh.lr == 0.5  # a resumed run needs nothing but the step and the progress


def test_cosine_schedule_follows_the_closed_form():
    opt = optimizer()
    schedule = LrSchedule(opt, budget_config("cosine"))
    schedule.before_update(5, 0.5)
    assert math.isclose(schedule.lr, 0.5)
    schedule.before_update(9, 1.0)
    assert math.isclose(schedule.lr, 0.0, abs_tol=1e-15)


def test_decay_start_keeps_the_full_lr_then_decays_over_the_rest_of_the_budget():
    cfg = budget_config("linear", decay_start=0.75)
    assert [budget_lr(cfg, 10, p) for p in (0.0, 0.5, 0.75, 0.875, 1.0)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    cosine = budget_config("cosine", decay_start=0.5)
    assert budget_lr(cosine, 10, 0.25) == 1.0 and math.isclose(budget_lr(cosine, 10, 0.75), 0.5)


def test_stalls_count_towards_early_stopping_only_in_a_budget_schedules_decay():
    linear = LrSchedule(optimizer(), TrainConfig(schedule="linear", decay_start=0.7))
    for progress, counts in [(0.0, False), (0.5, False), (0.69, False), (0.7, True), (0.95, True)]:
        linear.before_update(10, progress)
        assert linear.counts_stalls() is counts, progress
    for kind in ("plateau", "inverse_sqrt", "constant"):
        other = LrSchedule(optimizer(), TrainConfig(schedule=kind))
        other.before_update(10, 0.1)
        assert other.counts_stalls(), kind
