"""The one training loop the three recipes share: seed, device, epochs of Adam updates with gradient clipping,
evaluation, best-epoch selection, and the run directory's outputs.

A batch is ``(inputs, target)``: ``model(*inputs)`` gives the output that ``loss_fn(output, target)`` scores, so
classification (logits vs class ids) and regression (values vs values) use the same code.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from nmt.device import resolve_device, seed_everything, set_threads
from nmt.errors import NmtError
from nmt.recipes.config import Cell, RecipeConfig, RecipeTrainConfig

log = logging.getLogger(__name__)

Batch = tuple[tuple[Tensor, ...], Tensor]  # (model inputs, target)


def setup(cfg: RecipeConfig) -> tuple[torch.device, Path]:
    """Seed, pick the device and thread count, create the run directory and save the resolved config there."""
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(cfg), run_dir / "config.yaml", resolve=True)
    return device, run_dir


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return path


def make_rnn(
    cell: Cell,
    input_size: int,
    hidden_size: int,
    layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
) -> nn.RNNBase:
    """A batch-first ``nn.RNN`` (tanh) / ``nn.GRU`` / ``nn.LSTM``; dropout applies between stacked layers only."""
    cls = {Cell.rnn: nn.RNN, Cell.gru: nn.GRU, Cell.lstm: nn.LSTM}[Cell(cell)]
    return cls(
        input_size,
        hidden_size,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


class SequenceClassifier(nn.Module):
    """Many-to-one RNN (Listing 7-2): read ``[batch, steps, features]``, last step's output → linear → logits."""

    def __init__(self, n_inputs: int, n_classes: int, cell: Cell, hidden_size: int, layers: int = 1) -> None:
        super().__init__()
        self.rnn = make_rnn(cell, n_inputs, hidden_size, layers)
        self.out = nn.Linear(hidden_size, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x ``[batch, steps, features]`` → logits ``[batch, n_classes]``."""
        outputs, _ = self.rnn(x)  # [batch, steps, hidden]
        return self.out(outputs[:, -1])


def stratified_split(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Split row indices into ``len(fractions) + 1`` parts with the same class mix; the last part is the rest.

    Each class's rows are shuffled (seeded) and cut by ``round(fraction * class_count)``, so every part keeps the
    class proportions up to rounding. Returns sorted index arrays that together cover every row exactly once.
    """
    if sum(fractions) > 1 or min(fractions, default=0) < 0:
        raise NmtError(f"split fractions {fractions} must be >= 0 and sum to at most 1")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.cumsum([round(f * len(rows)) for f in fractions])
        for part, chunk in zip(parts, np.split(rows, np.minimum(cuts, len(rows))), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def index_batches(
    n: int, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0
) -> Iterator[np.ndarray]:
    """Row indices of consecutive batches of ``range(n)``; shuffled from ``(seed, epoch)`` alone, so reproducible.

    The last batch may be smaller: every row is used once per epoch.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def tensor_batches(
    inputs: Tensor, target: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0
) -> Iterator[Batch]:
    """Batches of rows of ``inputs [N, ...]`` and ``target [N, ...]``."""
    for idx in index_batches(len(inputs), batch_size, shuffle, seed, epoch):
        index = torch.from_numpy(idx)
        yield (inputs[index],), target[index]


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one record per epoch
    best_epoch: int = (
        0  # the epoch whose weights the model holds at the end (the last one without validation)
    )
    best_score: float | None = None
    seconds: float = 0.0


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[Batch]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    train: RecipeTrainConfig,
    device: torch.device,
    validate: Callable[[nn.Module], float] | None = None,
    maximize: bool = True,
    lr: float | None = None,
    epochs: int | None = None,
) -> FitResult:
    """Train ``model`` in place with Adam for ``epochs`` (default ``train.epochs``) passes of ``batches(epoch)``.

    After each epoch ``validate(model)`` (if given) scores the model; the weights of the best epoch (highest
    score, or lowest with ``maximize=False``) are restored at the end. Gradients are clipped to
    ``train.clip_norm`` (global L2 norm). A non-finite loss stops the run with an NmtError rather than training on.
    """
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr or train.lr, weight_decay=train.weight_decay)
    result = FitResult()
    best_state: dict[str, Tensor] | None = None
    start = time.perf_counter()
    n_epochs = train.epochs if epochs is None else epochs
    for epoch in range(1, n_epochs + 1):
        model.train()
        total, count = 0.0, 0
        for inputs, target in batches(epoch):
            output = model(*(x.to(device) for x in inputs))
            loss = loss_fn(output, target.to(device))
            if not torch.isfinite(loss):
                raise NmtError(
                    f"non-finite training loss at epoch {epoch}: lower train.lr or train.clip_norm"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.clip_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
            optimizer.step()
            total += loss.item() * target.numel()
            count += target.numel()
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "seconds": time.perf_counter() - start}
        if validate is not None:
            score = validate(model)
            record["dev"] = score
            better = result.best_score is None or (
                score > result.best_score if maximize else score < result.best_score
            )
            if better:
                result.best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
        else:
            result.best_epoch = epoch
        result.history.append(record)
        dev = f"  dev {record['dev']:.4f}" if "dev" in record else ""
        log.info(
            "epoch %d/%d  loss %.4f%s  (%.1f s)",
            epoch,
            n_epochs,
            record["train_loss"],
            dev,
            record["seconds"],
        )
        if train.max_minutes > 0 and record["seconds"] > 60 * train.max_minutes:
            log.info("stopping: train.max_minutes=%s reached", train.max_minutes)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> tuple[Tensor, Tensor]:
    """Model outputs and targets of all batches, concatenated on the CPU: ``([N, ...], [N, ...])``."""
    model.eval()
    outputs, targets = [], []
    for inputs, target in batches:
        outputs.append(model(*(x.to(device) for x in inputs)).float().cpu())
        targets.append(target)
    return torch.cat(outputs), torch.cat(targets)


def accuracy_of(model: nn.Module, batches: Callable[[], Iterable[Batch]], device: torch.device) -> float:
    """Share of argmax predictions equal to the target class: the usual dev score of the classifiers."""
    logits, target = predict(model, batches(), device)
    return float((logits.argmax(-1) == target).float().mean()) if len(target) else math.nan
