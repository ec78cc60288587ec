"""The recipes' figures, drawn with matplotlib's object API (no pyplot state, so scripts, tests and notebooks
behave the same) and saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str = "") -> Path:
    """Confusion matrix ``[true, pred]`` as a heatmap with counts in the cells."""
    size = 1.2 + 0.55 * len(names)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    ax.set_title(title)
    return _save(fig, path)


def plot_image_samples(
    images: np.ndarray, true: np.ndarray, pred: np.ndarray, names: list[str], path: Path, title: str = ""
) -> Path:
    """A grid of images ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` titled "pred / true" (red when wrong)."""
    n = len(images)
    cols = min(n, 8)
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, t, p in zip(axes, images, true, pred, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(f"{names[p]}\n/ {names[t]}", fontsize=7, color="black" if p == t else "red")
    fig.suptitle(title or "predicted / true")
    return _save(fig, path)


def plot_forecast(
    dates: list[str], truth: np.ndarray, predictions: dict[str, np.ndarray], path: Path, title: str = ""
) -> Path:
    """Truth and each named prediction over the test days (the book's Figure 7-9)."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    x = np.arange(len(truth))
    ax.plot(x, truth, color="black", lw=1.6, label="truth")
    for name, values in predictions.items():
        ax.plot(x, values, lw=1.0, label=name)
    step = max(1, len(dates) // 8)
    ax.set_xticks(x[::step], [dates[i] for i in x[::step]], rotation=30, ha="right")
    ax.set_ylabel("price")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_gradient_norms(norms: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """``||d y_T / d x_{T-k}||`` against the lag k, log scale: vanishing (falling) or exploding (rising) gradients."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, values in norms.items():
        ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-30), label=name)
    ax.set_xlabel("steps back k")
    ax.set_ylabel("gradient norm (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title or "gradient of the last output w.r.t. earlier inputs")
    return _save(fig, path)
