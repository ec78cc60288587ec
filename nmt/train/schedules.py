"""Learning-rate schedules: constant; warmup + inverse square root (per update); reduce-on-plateau of dev BLEU
(per validation); and the two budget-aware schedules, warmup + linear or cosine decay to ``min_lr`` at the end of
the run's budget. One small class drives them all so the trainer never asks which one it has.

Why a budget-aware schedule: a run that knows its wall-clock budget should spend it annealing. Budgeted-training
studies (Li, Yumer & Ramanan, ICLR 2020) find that decaying to (near) zero exactly when the budget ends beats step and
plateau schedules at every budget; a plateau schedule inside 30 CPU-minutes may never fire at all.

The budget schedules are functions of (update number, budget progress) alone, both of which the checkpoint
carries (``TrainState.step`` and ``TrainState.elapsed``), so a resumed run sets exactly the learning rates an
uninterrupted one would (exactly by the step budget; by the time budget, as exactly as wall time repeats).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nmt.config import Schedule, TrainConfig

BUDGET_SCHEDULES = (Schedule.linear, Schedule.cosine)


def inverse_sqrt_factor(step: int, warmup_steps: int) -> float:
    """lr multiplier: linear warmup to 1 over ``warmup_steps``, then ``sqrt(warmup / step)``."""
    step = max(step, 1)
    warmup = max(warmup_steps, 1)
    return min(step / warmup, math.sqrt(warmup / step))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """``min(1, step / warmup)`` for update ``step`` (1-based): 1 at once without warmup."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def linear_decay(progress: float) -> float:
    """``1 - p`` for budget progress ``p`` in [0, 1] (clamped): 1 at the start, 0 when the budget ends."""
    return 1.0 - min(max(progress, 0.0), 1.0)


def cosine_decay(progress: float) -> float:
    """``(1 + cos(pi p)) / 2`` for budget progress ``p`` in [0, 1] (clamped): flat at both ends."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


DECAYS = {Schedule.linear: linear_decay, Schedule.cosine: cosine_decay}


def budget_lr(cfg: TrainConfig, step: int, progress: float) -> float:
    """The learning rate of update ``step`` (1-based) at budget ``progress`` p:
    ``min_lr + (lr - min_lr) * warmup(step) * decay(q)``, where q = (p - s) / (1 - s) once p passes
    s = ``decay_start`` (0 before): the full lr for the first share s of the budget, then the decay."""
    decay = DECAYS[Schedule(cfg.schedule)]
    start = cfg.decay_start
    decay_progress = max(progress - start, 0.0) / (1.0 - start)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * warmup_factor(step, cfg.warmup_steps) * decay(decay_progress)


def budget_progress(step: int, elapsed: float, max_steps: int, max_minutes: float, epoch_steps: int) -> float:
    """How much of the run's budget is spent before update ``step`` (1-based), in [0, 1]: the largest fraction of
    the limits that are set. ``epoch_steps`` is the update count that ``train.epochs`` allows (always a limit)."""
    fractions = [(step - 1) / epoch_steps]
    if max_steps:
        fractions.append((step - 1) / max_steps)
    if max_minutes:
        fractions.append(elapsed / (max_minutes * 60.0))
    return min(max(fractions), 1.0)


class LrSchedule:
    """Sets the learning rate: call :meth:`before_update` before each optimizer step, :meth:`after_update` after
    it and :meth:`after_validation` after each validation."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.kind = Schedule(cfg.schedule)
        self.cfg = cfg
        self.optimizer = optimizer
        self.scheduler: Any = None
        self.progress = 0.0  # of the budget, before the latest update
        if self.kind == Schedule.plateau:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                min_lr=cfg.min_lr,
            )
        elif self.kind == Schedule.inverse_sqrt:
            warmup = cfg.warmup_steps
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: inverse_sqrt_factor(step + 1, warmup)
            )
        elif self.kind in BUDGET_SCHEDULES:
            self._set_lr(budget_lr(cfg, 1, 0.0))

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def before_update(self, step: int, progress: float) -> None:
        """Update ``step`` (1-based) is about to be taken with ``progress`` of the budget spent."""
        self.progress = progress
        if self.kind in BUDGET_SCHEDULES:
            self._set_lr(budget_lr(self.cfg, step, progress))

    def after_update(self) -> None:
        if self.kind == Schedule.inverse_sqrt:
            self.scheduler.step()

    def counts_stalls(self) -> bool:
        """Whether a validation without a dev-BLEU gain counts towards early stopping now. A budget schedule runs
        the first ``decay_start`` share of its budget at the full learning rate and gains most of its BLEU in the
        decay after it, so dev BLEU stalling before the decay is no reason to stop: those validations do not
        count. Other schedules: always."""
        return self.kind not in BUDGET_SCHEDULES or self.progress >= self.cfg.decay_start

    def after_validation(self, dev_bleu: float) -> None:
        if self.kind == Schedule.plateau:
            self.scheduler.step(dev_bleu)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)
