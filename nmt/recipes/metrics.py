"""Scores of the recipes: accuracy, F1, confusion matrix and per-class table for the classifiers; RMSE and the
naive "tomorrow = today" forecast for the regression."""

from __future__ import annotations

import numpy as np


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts: row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true), np.asarray(pred)), 1)
    return cm


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def per_class(cm: np.ndarray, names: list[str]) -> list[dict[str, float | int | str]]:
    """Precision, recall (the class's accuracy) and F1 of each class, from a confusion matrix.

    precision_c = cm[c, c] / sum_t cm[t, c]      recall_c = cm[c, c] / sum_p cm[c, p]
    F1_c = 2 P R / (P + R)
    """
    rows = []
    for c, name in enumerate(names):
        tp = cm[c, c]
        precision, recall = _ratio(tp, cm[:, c].sum()), _ratio(tp, cm[c, :].sum())
        rows.append(
            {
                "class": name,
                "support": int(cm[c, :].sum()),
                "precision": precision,
                "recall": recall,
                "f1": _ratio(2 * precision * recall, precision + recall),
            }
        )
    return rows


def classification_report(true: np.ndarray, pred: np.ndarray, names: list[str]) -> dict:
    """Accuracy, macro F1, the confusion matrix and the per-class table, JSON-ready."""
    cm = confusion_matrix(true, pred, len(names))
    table = per_class(cm, names)
    return {
        "accuracy": _ratio(np.trace(cm), cm.sum()),
        "macro_f1": float(np.mean([row["f1"] for row in table])),
        "confusion_matrix": cm.tolist(),
        "per_class": table,
    }


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the per-class rows (floats as percentages)."""
    headers = list(rows[0])
    cells = [[f"{100 * v:.1f}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    for cell in cells:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cell, widths)))
        )
    return "\n".join(lines)


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """sqrt(mean((pred - true)^2)), in the units of the inputs."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(f"rmse needs two non-empty arrays of one shape, got {pred.shape} and {true.shape}")
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def naive_forecast(series: np.ndarray, targets: np.ndarray, horizon: int) -> np.ndarray:
    """The "tomorrow = today" forecast: the value at ``t`` predicted as ``series[t - horizon]`` for each ``t``."""
    targets = np.asarray(targets)
    if targets.size and targets.min() < horizon:
        raise ValueError(f"a naive forecast {horizon} step(s) ahead needs targets >= {horizon}")
    return np.asarray(series)[targets - horizon]
