"""Learning-rate schedules: constant, warmup + inverse square root (per update), and reduce-on-plateau of dev BLEU
(per validation). One small class drives all three so the trainer never asks which one it has."""

from __future__ import annotations

import math
from typing import Any

import torch

from nmt.config import Schedule, TrainConfig


def inverse_sqrt_factor(step: int, warmup_steps: int) -> float:
    """lr multiplier: linear warmup to 1 over ``warmup_steps``, then ``sqrt(warmup / step)``."""
    step = max(step, 1)
    warmup = max(warmup_steps, 1)
    return min(step / warmup, math.sqrt(warmup / step))


class LrSchedule:
    """Wraps a torch scheduler; call :meth:`after_update` each update and :meth:`after_validation` each validation."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.kind = Schedule(cfg.schedule)
        self.optimizer = optimizer
        self.min_lr = cfg.min_lr
        self.scheduler: Any
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
        else:
            self.scheduler = None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def after_update(self) -> None:
        if self.kind == Schedule.inverse_sqrt:
            self.scheduler.step()

    def after_validation(self, dev_bleu: float) -> None:
        if self.kind == Schedule.plateau:
            self.scheduler.step(dev_bleu)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)
