"""Hooks the trainer calls at the edges of its phases: resume, update, validation, checkpoint write.

A tool that watches a run (the fault drill logs each phase so that it can aim a SIGKILL at it) subclasses
:class:`TrainerCallbacks`, overrides the hooks it needs and passes an instance to ``Trainer(cfg, callbacks=...)``.
Hooks observe: they must not change the run, so a watched run computes exactly what an unwatched one does.
Each default does nothing. Under several processes every rank calls its own hooks, except the checkpoint hooks,
which only the rank that writes (rank 0) calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TrainerCallbacks:
    """No-op hooks, called in this order: ``before_resume``/``after_resume`` once (``resume=true`` only), then per
    update ``before_update``/``after_update``, with ``before_validation``/``after_validation`` and the
    ``before_save``/``after_save`` pairs of the checkpoints written after it."""

    def before_resume(self) -> None:
        """The trainer is about to look for a checkpoint to resume from."""

    def after_resume(self, path: Path | None, step: int) -> None:
        """Resumed from checkpoint ``path`` at ``step``; ``path`` is None when there was none (a fresh start)."""

    def before_update(self, step: int) -> None:
        """Update number ``step`` (one more than the updates done so far) starts."""

    def after_update(self, step: int) -> None:
        """Update ``step`` was applied. An update skipped for a non-finite loss has no ``after_update``."""

    def before_validation(self, step: int) -> None:
        """Validation after update ``step`` starts."""

    def after_validation(self, record: dict[str, Any]) -> None:
        """Validation finished with ``record`` (``step``, ``bleu``, ``loss``...); its checkpoints come next."""

    def before_save(self, path: Path) -> None:
        """A checkpoint write to ``path`` starts (its temp file appears beside ``path`` during the write)."""

    def after_save(self, path: Path) -> None:
        """The checkpoint at ``path`` is written, renamed into place and synced."""
