"""Feedback for the person training: a tqdm bar against the budget that will stop the run, a few lines per
validation (its scores and three dev translations), metrics.csv, TensorBoard, a curve PNG and metrics.json at
the end."""

from __future__ import annotations

import csv
import json
import math
import resource
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nmt.config import TrainConfig

CSV_FIELDS = ["kind", "step", "epoch", "loss", "ppl", "lr", "tokens_per_second", "bleu", "chrf", "elapsed"]
SAMPLE_LABELS = {"source": "source:    ", "reference": "reference: ", "hypothesis": "hypothesis:"}
# tqdm's default layout counts whole updates; training minutes are fractional and have no useful rate.
BAR_FORMATS = {
    "upd": None,
    "min": "{l_bar}{bar}| {n:.1f}/{total:g} min [{elapsed}<{remaining}{postfix}]",
}


@dataclass(frozen=True)
class Progress:
    """How far the run is through the budget that will stop it: ``done`` of ``total`` ``unit`` ("upd"/"min")."""

    done: float
    total: float
    unit: str

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 1.0


def budget_progress(cfg: TrainConfig, updates_per_epoch: int, step: int, elapsed: float) -> Progress:
    """Progress against whichever budget ends the run first, after ``step`` updates and ``elapsed`` seconds.

    The update budget is ``train.max_steps`` or ``train.epochs * updates_per_epoch``, the smaller; the time
    budget ``train.max_minutes``. At a steady pace the budget with the larger share used runs out first.
    """
    updates = cfg.epochs * updates_per_epoch
    if cfg.max_steps:
        updates = min(updates, cfg.max_steps)
    by_updates = Progress(step, updates, "upd")
    if not cfg.max_minutes:
        return by_updates
    by_time = Progress(elapsed / 60, cfg.max_minutes, "min")
    return by_time if by_time.fraction >= by_updates.fraction else by_updates


def sample_lines(sample: Mapping[str, str]) -> list[str]:
    """One dev translation as aligned ``source:`` / ``reference:`` / ``hypothesis:`` lines."""
    return [f"{label} {sample[key]}" for key, label in SAMPLE_LABELS.items()]


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Monitor:
    """Collects training and validation records; everything lands in ``run_dir``."""

    def __init__(
        self,
        run_dir: Path,
        cfg: TrainConfig,
        updates_per_epoch: int,
        resume_step: int | None = None,
        resume_elapsed: float = 0.0,
    ) -> None:
        """``resume_step``: the step a resumed run continues from; earlier records are kept, later ones (written
        before the interruption, after the checkpoint) are dropped because the run is about to redo them.
        ``resume_elapsed``: the training seconds before it. The bar starts from both."""
        self.run_dir = run_dir
        self.cfg = cfg
        self.updates_per_epoch = updates_per_epoch
        self.window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "updates": 0, "start": None}
        csv_path = run_dir / "metrics.csv"
        kept = _records_up_to(csv_path, resume_step) if resume_step is not None else []
        self.csv_file = open(csv_path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.csv = csv.DictWriter(self.csv_file, fieldnames=CSV_FIELDS, extrasaction="ignore")
        self.csv.writeheader()
        self.csv.writerows(kept)
        self.csv_file.flush()
        self.tensorboard = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when asked for

            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.progress = budget_progress(cfg, updates_per_epoch, resume_step or 0, resume_elapsed)
        self.bar = tqdm(
            total=self.progress.total,
            initial=self.progress.done,
            unit=self.progress.unit,
            bar_format=BAR_FORMATS[self.progress.unit],
            disable=not cfg.progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def message(self, text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    def update(self, step: int, loss: float, nll: float, lr: float, tokens: int, elapsed: float) -> None:
        """Record one update: per-token loss and NLL, target tokens, total training seconds."""
        w = self.window
        if w["start"] is None:
            w["start"] = elapsed
        w["loss"] += loss * tokens
        w["nll"] += nll * tokens
        w["tokens"] += tokens
        w["updates"] += 1
        self._advance(budget_progress(self.cfg, self.updates_per_epoch, step, elapsed))
        if step % self.cfg.log_every:
            return
        span = max(elapsed - w["start"], 1e-9)
        rate = w["tokens"] / span if w["updates"] > 1 else float("nan")
        mean_loss, ppl = w["loss"] / w["tokens"], math.exp(min(w["nll"] / w["tokens"], 50.0))
        postfix = {
            "loss": f"{mean_loss:.3f}",
            "ppl": f"{ppl:.1f}",
            "lr": f"{lr:.2e}",
            "tok/s": f"{rate:,.0f}",
        }
        self.bar.set_postfix(postfix, refresh=False)
        self._record(
            {
                "kind": "train",
                "step": step,
                "loss": mean_loss,
                "ppl": ppl,
                "lr": lr,
                "tokens_per_second": rate,
                "elapsed": elapsed,
            }
        )
        self.window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "updates": 0, "start": elapsed}

    def _advance(self, progress: Progress) -> None:
        """Move the bar to ``progress``; when the other budget now looks like the one to end the run first,
        redraw the bar in its unit, counting its rate from here."""
        if progress.unit == self.progress.unit:
            self.bar.update(progress.done - self.bar.n)
        else:
            self.bar.reset(total=progress.total)
            self.bar.unit, self.bar.bar_format = progress.unit, BAR_FORMATS[progress.unit]
            self.bar.n = self.bar.last_print_n = self.bar.initial = progress.done
            self.bar.refresh()
        self.progress = progress

    def validation(
        self, record: dict[str, Any], best_bleu: float, samples: Sequence[Mapping[str, str]] = ()
    ) -> None:
        """Log one validation and its dev translations ``samples`` (source, reference, hypothesis each)."""
        log = [
            f"[valid] step {record['step']} epoch {record['epoch']}: dev BLEU {record['bleu']:.2f} "
            f"chrF {record['chrf']:.2f} loss {record['loss']:.3f} ppl {record['ppl']:.2f} "
            f"(best {best_bleu:.2f}) lr {record['lr']:.2e} [{record['seconds']:.1f}s]"
        ]
        for number, sample in enumerate(samples, start=1):
            lines = sample_lines(sample)
            log += [f"[valid]   example {number} {line}" for line in lines]
            if self.tensorboard is not None:
                # Indented: a Markdown code block, so the text shows as written and the labels stay aligned.
                text = "\n".join(f"    {line}" for line in lines)
                self.tensorboard.add_text(f"valid/example_{number}", text, record["step"])
        self.message("\n".join(log))  # one write: the bar is cleared and redrawn once
        self._record({"kind": "valid", **{k: record[k] for k in CSV_FIELDS if k in record}})

    def _record(self, row: dict[str, Any]) -> None:
        self.csv.writerow({k: row.get(k, "") for k in CSV_FIELDS})
        self.csv_file.flush()
        if self.tensorboard is not None:
            for key in ("loss", "ppl", "lr", "tokens_per_second", "bleu", "chrf"):
                if (
                    key in row
                    and row[key] is not None
                    and not (isinstance(row[key], float) and math.isnan(row[key]))
                ):
                    self.tensorboard.add_scalar(f"{row['kind']}/{key}", row[key], row["step"])

    def close(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json and the loss/BLEU curve; close the bar and writers."""
        self.bar.close()
        self.csv_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        plot_curves(self.run_dir / "metrics.csv", self.run_dir / "curves.png")
        self.message(
            f"done: {metrics['stop_reason']}; {metrics['steps']} updates in {metrics['train_minutes']:.1f} min, "
            f"{metrics['target_tokens_per_second']:,.0f} target tokens/s, best dev BLEU {metrics['best_dev_bleu']:.2f}, "
            f"peak RSS {metrics['peak_rss_mib']:,.0f} MiB"
        )


class SilentMonitor:
    """The monitor of ranks other than 0 in multi-process training: same calls, no output (rank 0 reports)."""

    def message(self, text: str) -> None:
        pass

    def update(self, step: int, loss: float, nll: float, lr: float, tokens: int, elapsed: float) -> None:
        pass

    def validation(
        self, record: dict[str, Any], best_bleu: float, samples: Sequence[Mapping[str, str]] = ()
    ) -> None:
        pass

    def close(self, metrics: dict[str, Any]) -> None:
        pass


def _records_up_to(csv_path: Path, step: int) -> list[dict[str, str]]:
    """The rows of an earlier run's metrics.csv with ``step <= step`` (none if the file is missing or empty)."""
    if not csv_path.is_file():
        return []
    with open(csv_path, encoding="utf-8", newline="") as handle:
        return [
            row
            for row in csv.DictReader(handle)
            if row.get("step", "").isdigit() and int(row["step"]) <= step
        ]


def plot_curves(csv_path: Path, png_path: Path) -> None:
    """Training loss and dev BLEU against updates, from metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    train = [(int(r["step"]), float(r["loss"])) for r in rows if r["kind"] == "train"]
    valid = [(int(r["step"]), float(r["bleu"])) for r in rows if r["kind"] == "valid"]
    fig, ax_loss = plt.subplots(figsize=(7, 4))
    if train:
        ax_loss.plot(*zip(*train), color="tab:blue", label="train loss")
    ax_loss.set_xlabel("update")
    ax_loss.set_ylabel("train loss (label-smoothed)", color="tab:blue")
    ax_bleu = ax_loss.twinx()
    if valid:
        ax_bleu.plot(*zip(*valid), "o-", color="tab:red", label="dev BLEU")
    ax_bleu.set_ylabel("dev BLEU", color="tab:red")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
