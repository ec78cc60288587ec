"""The training loop: batches → model → label-smoothed loss → Adam, with validation, early stopping, a wall-clock
budget, atomic checkpoints and exact resume.

Exact resume holds because everything that decides the next update is in the ``last`` checkpoint: parameters,
optimizer and schedule state, the sampler's (epoch, position) — its order is a function of (seed, epoch) alone —
and the torch RNG state that drives dropout.
"""

from __future__ import annotations

import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from nmt.checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from nmt.config import Config, Precision, save_config
from nmt.data.batching import Batch, TokenBucketSampler, collate
from nmt.data.prepare import PreparedData, prepare_data
from nmt.device import resolve_device, set_threads
from nmt.errors import NmtError
from nmt.model import build_model
from nmt.tokenizer import PAD_ID
from nmt.train.loss import sequence_loss
from nmt.train.monitor import Monitor, peak_rss_mib
from nmt.train.schedules import LrSchedule
from nmt.train.validate import validate

CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrainState:
    """Counters that a checkpoint carries so a resumed run continues exactly where it stopped."""

    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumed runs
    tgt_tokens: int = 0
    best_bleu: float = -1.0
    bad_validations: int = 0  # validations since the best one
    bad_steps: int = 0  # consecutive non-finite losses
    skipped_steps: int = 0  # all non-finite losses skipped
    kept: list[str] = field(default_factory=list)  # step checkpoints kept for averaging, oldest first
    history: list[dict[str, float]] = field(default_factory=list)  # one record per validation
    stop_reason: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain containers (enums as strings), safe for ``weights_only`` checkpoints."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)  # type: ignore[return-value]


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` into the model directory ``cfg.run_dir``."""

    def __init__(self, cfg: Config, prepared: PreparedData | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        set_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.data = prepared if prepared is not None else prepare_data(cfg, self.run_dir)
        save_config(cfg, self.run_dir / "config.yaml")
        tok = self.data.tokenizer
        self.model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size).to(self.device)
        tc = cfg.train
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay
        )
        self.schedule = LrSchedule(self.optimizer, tc)
        train = self.data.splits["train"]
        self.train_split = train.select_columns(["src_ids", "tgt_ids"])
        self.sampler = TokenBucketSampler(
            np.asarray(train["src_len"]), np.asarray(train["tgt_len"]), tc.max_tokens, seed=cfg.seed
        )
        self.state = TrainState()
        self.autocast_dtype = self._autocast_dtype()
        self.stop_signal: int | None = None
        if cfg.resume:
            self._resume()

    # ------------------------------------------------------------------------------------ checkpoints
    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.cfg.train.precision
        if precision == Precision.bf16 or (precision == Precision.auto and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def checkpoint_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "state": asdict(self.state),
            "config": config_dict(self.cfg),
        }

    def _resume(self) -> None:
        """Continue from ``last``; if it is damaged, fall back to the newest good step checkpoint."""
        remove_stale_temps(self.ckpt_dir)
        candidates = [self.ckpt_dir / "last.pt"] + [
            self.ckpt_dir / name for name in reversed(self._kept_on_disk())
        ]
        errors = []
        for path in candidates:
            if not path.is_file():
                continue
            try:
                bundle = load_checkpoint(path, map_location=self.device)
                if "optimizer" not in bundle:
                    raise NmtError(f"{path}: holds weights only, not a training state")
            except NmtError as exc:
                errors.append(str(exc))
                continue
            self._restore(bundle)
            for message in errors:
                self.monitor_message(f"warning: skipped damaged checkpoint: {message}")
            self.monitor_message(f"resumed from {path} at step {self.state.step}, epoch {self.state.epoch}")
            return
        if errors:
            raise NmtError("resume=true, but no usable checkpoint: " + "; ".join(errors))
        self.monitor_message(f"resume=true, but {self.ckpt_dir} has no checkpoint yet: starting fresh")

    def _kept_on_disk(self) -> list[str]:
        return sorted(p.name for p in self.ckpt_dir.glob("step_*.pt")) if self.ckpt_dir.is_dir() else []

    def _restore(self, bundle: dict[str, Any]) -> None:
        self.model.load_state_dict(bundle["model"])
        self.optimizer.load_state_dict(bundle["optimizer"])
        self.schedule.load_state_dict(bundle["schedule"])
        self.sampler.load_state_dict(bundle["sampler"])
        torch.set_rng_state(bundle["rng"]["torch"].cpu())
        if "cuda" in bundle["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in bundle["rng"]["cuda"]])
        self.state = TrainState(**bundle["state"])

    def save(self, name: str, full: bool = True) -> Path:
        """Write ``checkpoints/<name>.pt``: the full training state, or the weights alone (``full=False``)."""
        bundle = self.checkpoint_state()
        if not full:
            bundle = {k: bundle[k] for k in ("format", "model", "state", "config")}
        path = self.ckpt_dir / f"{name}.pt"
        save_checkpoint(bundle, path)
        return path

    def _keep_step_checkpoint(self) -> None:
        name = f"step_{self.state.step:08d}"
        self.save(name, full=False)
        self.state.kept.append(f"{name}.pt")
        while len(self.state.kept) > max(self.cfg.train.keep_checkpoints, 1):
            (self.ckpt_dir / self.state.kept.pop(0)).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------ the loop
    def monitor_message(self, text: str) -> None:
        monitor = getattr(self, "monitor", None)
        if monitor is not None:
            monitor.message(text)
        else:
            print(text, flush=True)

    def _batch(self, indices: list[int]) -> Batch:
        rows = self.train_split[indices]
        return collate(rows["src_ids"], rows["tgt_ids"], indices).to(self.device)

    def _update(self, batches: list[Batch]) -> tuple[float, float, int] | None:
        """One optimizer update over ``batches`` (gradient accumulation). Returns (loss, nll, tokens) per
        token, or None when the loss was not finite and the update was skipped."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total_tokens = sum(b.n_tgt_tokens for b in batches)
        loss_sum = nll_sum = torch.zeros((), device=self.device)
        for batch in batches:
            with torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ):
                logits, _ = self.model(batch.src, batch.src_lengths, batch.tgt_in)
            sums = sequence_loss(logits, batch.tgt_out, self.cfg.train.label_smoothing, PAD_ID)
            # Normalise by the tokens of the whole update, so accumulation equals one large batch.
            (sums.loss / total_tokens).backward()
            loss_sum = loss_sum + sums.loss.detach()
            nll_sum = nll_sum + sums.nll.detach()
        clip = self.cfg.train.clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        loss_value, nll_value = float(loss_sum), float(nll_sum)  # the update's one host sync
        if not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.schedule.after_update()
        return loss_value / total_tokens, nll_value / total_tokens, total_tokens

    def _tick(self) -> float:
        """Fold the time since the last tick into ``state.elapsed`` (which checkpoints carry); return it."""
        now = time.monotonic()
        self.state.elapsed += now - self._segment_start
        self._segment_start = now
        return self.state.elapsed

    def _budget_left(self) -> bool:
        tc = self.cfg.train
        if tc.max_steps and self.state.step >= tc.max_steps:
            self.state.stop_reason = f"reached train.max_steps={tc.max_steps}"
            return False
        if tc.max_minutes and self._tick() >= tc.max_minutes * 60:
            self.state.stop_reason = f"reached train.max_minutes={tc.max_minutes}"
            return False
        return True

    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum: int, _frame: Any) -> None:
            self.stop_signal = signum

        return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}

    def fit(self) -> dict[str, Any]:
        """Train until a budget, early stopping or a signal ends the run; returns the final metrics."""
        self.monitor = Monitor(self.run_dir, self.cfg.train, resume=self.cfg.resume)
        self.monitor_message(
            f"model: {self.model.num_parameters():,} parameters on {self.device}; "
            f"train {len(self.train_split):,} pairs, {len(self.sampler):,} batches/epoch"
        )
        previous = self._install_signal_handlers()
        self._segment_start = time.monotonic()
        step_at_start = self.state.step
        try:
            self._run_epochs()
            last_validated = self.state.history[-1]["step"] if self.state.history else -1
            if (
                self.stop_signal is None
                and self.state.step > step_at_start
                and last_validated != self.state.step
            ):
                self._validate()
            self._tick()
            self.save("last")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._finish()

    def _run_epochs(self) -> None:
        tc = self.cfg.train
        while self.state.epoch < tc.epochs:
            pending: list[Batch] = []
            for indices in self.sampler:
                if not self._budget_left():
                    return
                pending.append(self._batch(indices))
                if len(pending) == tc.accumulate:
                    if not self._after_update(self._update(pending)):
                        return
                    pending = []
            if pending and not self._after_update(self._update(pending)):
                return
            self.state.epoch += 1
            self.sampler.set_epoch(self.state.epoch)
        self.state.stop_reason = f"finished train.epochs={tc.epochs}"

    def _after_update(self, result: tuple[float, float, int] | None) -> bool:
        """Bookkeeping after one update; False ends the run."""
        tc = self.cfg.train
        if result is None:
            self.state.bad_steps += 1
            self.state.skipped_steps += 1
            self.monitor_message(
                f"warning: non-finite loss at step {self.state.step + 1}: update skipped "
                f"({self.state.bad_steps} in a row, {self.state.skipped_steps} in all)"
            )
            if self.state.bad_steps >= tc.max_bad_steps:
                self.state.stop_reason = (
                    f"{self.state.bad_steps} non-finite losses in a row (train.max_bad_steps={tc.max_bad_steps}): "
                    "lower train.lr or check the data"
                )
                return False
            return True
        loss, nll, tokens = result
        self.state.bad_steps = 0
        self.state.step += 1
        self.state.tgt_tokens += tokens
        self.monitor.update(self.state.step, loss, nll, self.schedule.lr, tokens, self._tick())
        if self.stop_signal is not None:
            self.state.stop_reason = f"stopped by signal {signal.Signals(self.stop_signal).name}"
            return False
        if self.state.step % tc.validate_every == 0:
            keep_going = self._validate()
            self._tick()
            self.save("last")
            return keep_going
        return True

    def _validate(self) -> bool:
        """Run validation, keep best/step checkpoints; False when early stopping triggers."""
        tc = self.cfg.train
        record = validate(self.model, self.data, self.cfg, self.device)
        record.update(step=self.state.step, epoch=self.state.epoch, lr=self.schedule.lr)
        self.state.history.append(record)
        self.schedule.after_validation(record["bleu"])
        if record["bleu"] > self.state.best_bleu:
            self.state.best_bleu = record["bleu"]
            self.state.bad_validations = 0
            self.save("best", full=False)
        else:
            self.state.bad_validations += 1
        self._keep_step_checkpoint()
        self.monitor.validation(record, self.state.best_bleu)
        if tc.patience and self.state.bad_validations >= tc.patience:
            self.state.stop_reason = f"early stopping: no dev BLEU gain in {tc.patience} validations"
            return False
        return True

    def _finish(self) -> dict[str, Any]:
        s = self.state
        metrics = {
            "stop_reason": s.stop_reason,
            "steps": s.step,
            "epochs": s.epoch,
            "train_minutes": s.elapsed / 60,
            "target_tokens": s.tgt_tokens,
            "target_tokens_per_second": s.tgt_tokens / s.elapsed if s.elapsed > 0 else 0.0,
            "skipped_steps": s.skipped_steps,
            "parameters": self.model.num_parameters(),
            "peak_rss_mib": peak_rss_mib(),
            "best_dev_bleu": s.best_bleu,
            "validations": s.history,
            "device": str(self.device),
        }
        self.monitor.close(metrics)
        return metrics


def train(cfg: Config) -> dict[str, Any]:
    """Prepare data, train, and return the final metrics (also in ``<run_dir>/metrics.json``)."""
    return Trainer(cfg).fit()
