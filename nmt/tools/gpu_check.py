"""A GPU figure in one command: train a model for a bounded time (``train=full`` for at most 8 minutes by
default), evaluate it on the test split, and print training target tokens/s, test BLEU and peak memory.

Peak memory is the host's (this process's resident-set high-water mark, covering preparation, training and
evaluation) and, on CUDA, the device's: ``torch.cuda.max_memory_allocated`` over training (the trainer's
``peak_device_mib`` in metrics.json when it records one) and over the whole check. Training throughput is the
trainer's own figure: target tokens over its clock, which includes its dev validations. Everything runs in
this process; the model directory is ``run_dir`` (trained afresh: ``resume`` is ignored), the figures go to
``output`` as JSON too.

Torch, training and evaluation are imported inside :func:`gpu_check`: ``nmt gpu_check --help`` imports this
module for its config alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from nmt.config import Config, EvaluateConfig, GpuCheckConfig

_ROWS = {  # figure -> (label, format)
    "device": ("device", "{}"),
    "steps": ("updates", "{}"),
    "train_minutes": ("training minutes (its clock)", "{:.2f}"),
    "target_tokens_per_second": ("training target tokens/s", "{:,.0f}"),
    "best_dev_bleu": ("best dev BLEU", "{:.2f}"),
    "test_bleu": ("test BLEU", "{:.2f}"),
    "test_target_tokens_per_second": ("test decoding target tokens/s", "{:,.0f}"),
    "peak_rss_mib": ("peak host RSS MiB", "{:,.0f}"),
    "train_peak_device_mib": ("peak device MiB, training", "{:,.0f}"),
    "peak_device_mib": ("peak device MiB, training + test", "{:,.0f}"),
    "wall_seconds": ("wall seconds (preparation included)", "{:.0f}"),
}


def format_figures(figures: dict[str, Any]) -> str:
    """A two-column Markdown table of :func:`gpu_check`'s figures (those present)."""
    lines = ["| figure | value |", "|---|---|"]
    for key, (label, fmt) in _ROWS.items():
        if figures.get(key) is not None:
            lines.append(f"| {label} | {fmt.format(figures[key])} |")
    return "\n".join(lines)


def gpu_check(cfg: GpuCheckConfig) -> dict[str, Any]:
    """Train ``cfg`` into ``cfg.run_dir``, evaluate its best checkpoint on ``cfg.split``; print and return the
    figures (also written to ``cfg.output``)."""
    import torch

    from nmt.evaluate import evaluate_model
    from nmt.train.monitor import peak_rss_mib
    from nmt.train.trainer import train

    started = time.perf_counter()
    training = Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)})
    training.resume = False
    metrics = train(training)
    cuda = metrics["device"].startswith("cuda")
    train_peak_device = metrics.get("peak_device_mib")
    if cuda and train_peak_device is None:  # a trainer that does not record it: nothing else has run yet
        train_peak_device = torch.cuda.max_memory_allocated() / 2**20
    run_dir = Path(cfg.run_dir)
    scores = evaluate_model(
        EvaluateConfig(
            model_dir=str(run_dir),
            split=cfg.split,
            search=cfg.test_search,
            device=metrics["device"],
            threads=cfg.threads,
            output=str(run_dir / "eval" / f"gpu_check_{cfg.split}.json"),
        )
    )
    figures = {
        "device": metrics["device"],
        "cuda_device_name": torch.cuda.get_device_name() if cuda else None,
        "steps": metrics["steps"],
        "stop_reason": metrics["stop_reason"],
        "train_minutes": metrics["train_minutes"],
        "target_tokens": metrics["target_tokens"],
        "target_tokens_per_second": metrics["target_tokens_per_second"],
        "parameters": metrics["parameters"],
        "best_dev_bleu": metrics["best_dev_bleu"],
        "split": cfg.split,
        "test_bleu": scores["bleu"],
        "test_target_tokens_per_second": scores["target_tokens_per_second"],
        "peak_rss_mib": peak_rss_mib(),
        "train_peak_device_mib": train_peak_device,
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "wall_seconds": time.perf_counter() - started,
    }
    out = Path(cfg.output or run_dir / "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(format_figures(figures))
    print(f"figures written to {out}")
    return figures
