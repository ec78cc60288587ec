"""The training loop: batches → model → label-smoothed loss → Adam, with validation, early stopping, a wall-clock
budget, atomic checkpoints and exact resume.

Exact resume holds because everything that decides the next update is in the ``last`` checkpoint: parameters,
the weight average (``train.ema_decay``), optimizer and schedule state, the step and elapsed time that the budget
schedules read, the sampler's (epoch, position) — its order is a function of (seed, epoch) alone —
and the torch RNG state that drives dropout (every rank's, under DDP: see ``nmt.train.distributed``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from nmt.checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    LAST,
    PREVIOUS_LAST,
    checkpoint_path,
    keep_previous,
    load_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    step_name,
)
from nmt.config import Config, CorpusSource, LexiconSettings, Precision
from nmt.data.batching import Batch, TokenBucketSampler, collate
from nmt.data.cache import load_entry
from nmt.data.prepare import SUMMARY_FILE, PreparedData, prepare_data
from nmt.device import keep_freed_memory, seed_everything, set_threads
from nmt.errors import NmtError
from nmt.model import build_model
from nmt.model_dir import write_model_config
from nmt.shortlist import lexicon_from_split, save_lexicon
from nmt.tokenizer import Tokenizer
from nmt.train import distributed
from nmt.train.callbacks import TrainerCallbacks
from nmt.train.ema import WeightAverage
from nmt.train.loss import loss_extension, sequence_loss
from nmt.train.monitor import Monitor, SilentMonitor, peak_rss_mib
from nmt.train.schedules import LrSchedule, budget_progress
from nmt.train.validate import validate
from nmt.vocab import PAD_ID


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


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain containers (enums as strings), safe for ``weights_only`` checkpoints."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)  # type: ignore[return-value]


DEV_SETTING = {  # the setting that gives each corpus source its dev split
    CorpusSource.text: "data.text.dev",
    CorpusSource.hf: "data.hf.dev_split",
    CorpusSource.bible: "data.bible.dev_books (with data.bible.split=books)",
}


def require_dev_set(cfg: Config) -> None:
    """Training validates on the dev split: a text corpus without ``data.text.dev`` fails here, before any work."""
    if cfg.data.source == CorpusSource.text and not cfg.data.text.dev:
        raise NmtError(
            "data.text.dev is not set, but training validates on a dev set (every train.validate_every "
            "updates and at the end): give data.text.dev=PREFIX (PREFIX.src/PREFIX.tgt) or, with "
            "data.text.format=tsv, a TSV file of held-out pairs"
        )


def _require_dev_pairs(prepared: PreparedData, cfg: Config) -> None:
    if len(prepared.splits["dev"]) == 0:
        raise NmtError(
            f"the dev split of data.source={cfg.data.source} is empty, but training validates on it: "
            f"check {DEV_SETTING[CorpusSource(cfg.data.source)]}"
        )


def load_prepared(run_dir: Path) -> PreparedData:
    """The data another process prepared for ``run_dir``: its tokenizer and the tokenized cache its summary names."""
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise NmtError(
            f"{summary_path}: not found; run_dir must be on a file system that every node can read"
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    cache = Path(summary["tokenized"]["cache"])
    entry = load_entry(cache)
    if entry is None:
        raise NmtError(
            f"{cache}: cannot read the tokenized data; put data.cache_dir on a file system every node can read"
        )
    return PreparedData(entry[0], Tokenizer.load(run_dir), summary)


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` into the model directory ``cfg.run_dir``.

    ``callbacks`` watch the run's phases (see :mod:`nmt.train.callbacks`); checkpoint writes flush to disk
    through ``fsync`` (see :func:`nmt.checkpoint.save_checkpoint`).
    """

    def __init__(
        self,
        cfg: Config,
        prepared: PreparedData | None = None,
        callbacks: TrainerCallbacks | None = None,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.cfg = cfg
        self.callbacks = callbacks or TrainerCallbacks()
        self.fsync = fsync
        self.ranks = distributed.current()  # rank 0 of 1 without a process group
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.threads = set_threads(cfg.threads)
        keep_freed_memory()  # every update frees and allocates the same large tensors again
        seed_everything(cfg.seed)
        self.device = distributed.rank_device(cfg.device, self.ranks)
        require_dev_set(cfg)
        self.data = prepared if prepared is not None else self._prepare_data()
        _require_dev_pairs(self.data, cfg)
        if self.ranks.is_main:
            write_model_config(cfg, self.run_dir)
        tok = self.data.tokenizer
        self.model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size).to(self.device)
        tc = cfg.train
        # built here, before the training clock starts (about a minute the first time, cached after)
        self.loops = (
            self.model.compile_loops()
            if tc.compiled_loops and self.device.type == "cpu"
            else "encoder loop torch's, decoder loop the Python loop"
        )
        self.compiled_loss = tc.compiled_loss and self.device.type == "cpu" and loss_extension() is not None
        # fused: one pass over each parameter per update. Unfused Adam on the CPU runs a dozen ops per tensor
        # (14.9 against 4.4 ms per step for the benchmark's 5M parameters, 2 threads), the same update to rounding.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=tc.lr,
            betas=tuple(tc.adam_betas),
            weight_decay=tc.weight_decay,
            fused=True,
        )
        self.schedule = LrSchedule(self.optimizer, tc)
        self.train_split = self.data.splits["train"].select_columns(["src_ids", "tgt_ids"])
        # Subword regularisation segments each batch's text afresh; the prepared ids still size the batches.
        self.train_text = (
            self.data.splits["train"].select_columns(["src", "tgt"]) if tc.subword_alpha else None
        )
        self.sampler = TokenBucketSampler(
            *self.data.lengths("train"),  # numpy arrays straight from Arrow: no Python int per pair
            tc.max_tokens,
            seed=cfg.seed,
            num_replicas=self.ranks.world_size,
            rank=self.ranks.rank,
        )
        self.state = TrainState()
        # Validated and saved as `best` (and the step checkpoints) in place of the trained weights when on.
        self.average = WeightAverage(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.autocast_dtype = self._autocast_dtype()
        self.stop_signal: int | None = None
        self._segment_start = time.monotonic()  # the training clock; fit() restarts it
        if self.ranks.world_size > 1:
            torch.manual_seed(cfg.seed + self.ranks.rank)  # same initial weights, but dropout masks per rank
        if cfg.resume:  # rank 0 first: it may move a damaged checkpoint aside before the others look
            distributed.main_first(self._resume, self._resume)
        self.train_model = self._data_parallel()

    def _prepare_data(self) -> PreparedData:
        """Rank 0 prepares the data (it may train the tokenizer and fill the caches); the other ranks then read
        what it wrote, so that they neither race it nor rewrite its summary."""
        return distributed.main_first(
            lambda: prepare_data(self.cfg, self.run_dir), lambda: load_prepared(self.run_dir)
        )

    def _data_parallel(self) -> torch.nn.Module:
        """The module the training forward runs through: DistributedDataParallel over ``self.model`` under
        several processes (it averages gradients over ranks in backward), else ``self.model`` itself.
        Validation and checkpoints always use ``self.model``."""
        if self.ranks.world_size == 1:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

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
            **({"ema": self.average.state_dict()} if self.average is not None else {}),
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "state": asdict(self.state),
            "config": config_dict(self.cfg),
            "world_size": self.ranks.world_size,
            # every rank's own dropout RNG (a collective: all ranks call this; rank 0 writes)
            **({"rng_ranks": distributed.gather_objects(rng)} if self.ranks.world_size > 1 else {}),
        }

    def _resume(self) -> None:
        """Continue from ``last``, or from ``last.prev`` (the full state saved before it) when ``last`` is missing
        or damaged. A damaged file is moved aside (``*.damaged``) so that the next save cannot rotate it over
        the good one."""
        self.callbacks.before_resume()
        remove_stale_temps(self.ckpt_dir)
        damaged: list[tuple[Path, str]] = []
        for path in (checkpoint_path(self.ckpt_dir, LAST), checkpoint_path(self.ckpt_dir, PREVIOUS_LAST)):
            if not path.is_file():
                continue
            try:
                bundle = load_checkpoint(path, map_location=self.device)
                if "optimizer" not in bundle:
                    raise NmtError(f"{path}: holds weights only, not a training state")
            except NmtError as exc:
                damaged.append((path, str(exc)))
                continue
            try:
                self._restore(bundle)
            except (KeyError, RuntimeError, ValueError) as exc:
                raise NmtError(
                    f"{path}: cannot resume from it with this config (were model or train settings changed? "
                    f"keep them, or use a new run_dir): {exc}"
                ) from exc
            for bad, message in damaged:
                aside = bad.with_name(f"{bad.name}.damaged")
                bad.replace(aside)
                self.monitor_message(
                    f"warning: skipped damaged checkpoint (moved to {aside.name}): {message}"
                )
            self.monitor_message(f"resumed from {path} at step {self.state.step}, epoch {self.state.epoch}")
            self.callbacks.after_resume(path, self.state.step)
            return
        if damaged:
            raise NmtError(
                "resume=true, but no usable training checkpoint: "
                + "; ".join(message for _, message in damaged)
                + ". Set resume=false or use a new run_dir to start over"
            )
        self.monitor_message(f"resume=true, but {self.ckpt_dir} has no checkpoint yet: starting fresh")
        self.callbacks.after_resume(None, self.state.step)

    def _restore(self, bundle: dict[str, Any]) -> None:
        self.model.load_state_dict(bundle["model"])
        self.optimizer.load_state_dict(bundle["optimizer"])
        self.schedule.load_state_dict(bundle["schedule"])
        if self.average is not None:
            if "ema" not in bundle:
                raise KeyError("the checkpoint has no weight average (it was trained with train.ema_decay=0)")
            self.average.load_state_dict(bundle["ema"])
        sampler, rng = dict(bundle["sampler"]), bundle["rng"]
        saved_ranks, ranks = bundle.get("world_size", 1), self.ranks
        if saved_ranks == ranks.world_size:
            rng = bundle.get("rng_ranks", [rng])[ranks.rank]
        else:
            # The position counts this rank's batches: convert it through the global batch count.
            sampler["position"] = sampler["position"] * saved_ranks // ranks.world_size
            self.monitor_message(
                f"warning: the checkpoint was written by {saved_ranks} process(es), this run has "
                f"{ranks.world_size}: training continues from the same point, but not exactly as an "
                "uninterrupted run would"
            )
        self.sampler.load_state_dict(sampler)
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        if saved_ranks != ranks.world_size and ranks.world_size > 1:
            torch.manual_seed(self.cfg.seed + ranks.rank + bundle["state"]["step"])  # dropout masks per rank
        self.state = TrainState(**bundle["state"])

    def save(self, name: str, full: bool = True) -> Path:
        """Write ``checkpoints/<name>.pt``: the full training state, or the validated weights alone (``full=False``:
        the weight average when ``train.ema_decay`` is on, else the trained weights)."""
        bundle = self.checkpoint_state()
        if not full:
            bundle = {k: bundle[k] for k in ("format", "model", "state", "config")}
            if self.average is not None:
                bundle["model"] = self.average.weights(self.model)
        path = checkpoint_path(self.ckpt_dir, name)
        if not self.ranks.is_main:  # the ranks hold the same state; one writes it
            return path
        self.callbacks.before_save(path)
        if name == LAST:  # resume's fallback if `last` gets damaged
            keep_previous(path, checkpoint_path(self.ckpt_dir, PREVIOUS_LAST))
        save_checkpoint(bundle, path, self.fsync)
        self.callbacks.after_save(path)
        return path

    def _keep_step_checkpoint(self) -> None:
        path = self.save(step_name(self.state.step), full=False)
        self.state.kept.append(path.name)
        while len(self.state.kept) > max(self.cfg.train.keep_checkpoints, 1):
            oldest = self.ckpt_dir / self.state.kept.pop(0)
            if self.ranks.is_main:
                oldest.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------ the loop
    def monitor_message(self, text: str) -> None:
        if not self.ranks.is_main:
            return
        monitor = getattr(self, "monitor", None)
        if monitor is not None:
            monitor.message(text)
        else:
            print(text, flush=True)

    def _batch(self, indices: list[int]) -> Batch:
        if self.train_text is None:
            rows = self.train_split[indices]
            return collate(rows["src_ids"], rows["tgt_ids"], indices).to(self.device)
        rows, tok, alpha = self.train_text[indices], self.data.tokenizer, self.cfg.train.subword_alpha
        src_ids, tgt_ids = tok.sample_src(rows["src"], alpha), tok.sample_tgt(rows["tgt"], alpha)
        return collate(src_ids, tgt_ids, indices).to(self.device)

    def _update(self, batches: list[Batch]) -> tuple[float, float, int] | None:
        """One optimizer update over ``batches`` (gradient accumulation). Returns (loss, nll, tokens) per
        token, or None when the loss was not finite and the update was skipped.

        With R processes an update spans the batches of every rank: tokens, loss and NLL are sums over ranks,
        and the gradient is the same as one process would get from all those batches.
        """
        self.callbacks.before_update(self.state.step + 1)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        world = self.ranks.world_size
        # One all-reduce gives the update's tokens and the ranks' mean clock: every rank then sets the same lr.
        tokens, elapsed = distributed.reduce_numbers([sum(b.n_tgt_tokens for b in batches), self._tick()])
        total_tokens = int(tokens)
        loss_sum = nll_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(batches):
            # Under DDP only the last micro-batch's backward all-reduces the (accumulated) gradients.
            in_sync = world == 1 or i == len(batches) - 1
            with contextlib.nullcontext() if in_sync else self.train_model.no_sync():
                with torch.autocast(
                    self.device.type,
                    dtype=self.autocast_dtype or torch.float32,
                    enabled=self.autocast_dtype is not None,
                ):
                    logits, _ = self.train_model(batch.src, batch.src_lengths, batch.tgt_in)
                sums = sequence_loss(
                    logits, batch.tgt_out, self.cfg.train.label_smoothing, PAD_ID, compiled=self.compiled_loss
                )
                # Normalise by N, the target tokens of the whole update on all ranks, so that accumulation and
                # data parallelism both equal one large batch. DDP averages gradients over the R ranks, so
                # rank r backpropagates R * L_r / N (L_r: its loss sum) and the average is sum_r L_r / N.
                (sums.loss * world / total_tokens).backward()
            loss_sum = loss_sum + sums.loss.detach()
            nll_sum = nll_sum + sums.nll.detach()
        clip = self.cfg.train.clip_norm
        # After DDP's all-reduce every rank holds the same gradients: same norm, same clipping, same step.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        loss_value, nll_value = distributed.reduce_numbers([float(loss_sum), float(nll_sum)])
        if not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.schedule.before_update(self.state.step + 1, self._progress(elapsed / world))
        self.optimizer.step()
        self.schedule.after_update()
        if self.average is not None:
            self.average.update(self.model, self.state.step + 1)
        return loss_value / total_tokens, nll_value / total_tokens, total_tokens

    def _progress(self, elapsed: float) -> float:
        """The share of the budget spent before the next update, at ``elapsed`` training seconds."""
        tc = self.cfg.train
        epoch_steps = tc.epochs * math.ceil(len(self.sampler) / tc.accumulate)
        return budget_progress(self.state.step + 1, elapsed, tc.max_steps, tc.max_minutes, epoch_steps)

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
        # Clocks differ between ranks: the first rank out of time stops them all, before the same batch.
        if tc.max_minutes and distributed.max_over_ranks(self._tick() >= tc.max_minutes * 60):
            self.state.stop_reason = f"reached train.max_minutes={tc.max_minutes}"
            return False
        return True

    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum: int, _frame: Any) -> None:
            self.stop_signal = signum

        return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}

    def fit(self) -> dict[str, Any]:
        """Train until a budget, early stopping or a signal ends the run; returns the final metrics."""
        tc, world = self.cfg.train, self.ranks.world_size
        if self.ranks.is_main:
            self.monitor: Monitor | SilentMonitor = Monitor(
                self.run_dir,
                tc,
                updates_per_epoch=math.ceil(len(self.sampler) / tc.accumulate),
                resume_step=self.state.step if self.cfg.resume else None,
                resume_elapsed=self.state.elapsed,
            )
        else:
            self.monitor = SilentMonitor()
        self.monitor_message(
            f"model: {self.model.num_parameters():,} parameters on {self.device}"
            + (
                f" ({self.threads} thread{'s' if self.threads > 1 else ''})"
                if self.device.type == "cpu"
                else ""
            )
            + f"; {self.loops}; {'compiled' if self.compiled_loss else 'Python'} loss; "
            f"train {len(self.train_split):,} pairs, {len(self.sampler):,} batches/epoch"
            + (f" per process, {world} processes" if world > 1 else "")
            + f"; effective batch: up to {tc.max_tokens:,} tokens x accumulate {tc.accumulate} x {world} "
            f"process(es) = {tc.max_tokens * tc.accumulate * world:,} tokens per update"
        )
        previous = self._install_signal_handlers()
        self._segment_start = time.monotonic()
        step_at_start = self.state.step
        try:
            self._run_epochs()
            last_validated = self.state.history[-1]["step"] if self.state.history else -1
            if (
                not distributed.max_over_ranks(self.stop_signal or 0)
                and self.state.step > step_at_start
                and last_validated != self.state.step
            ):
                self._validate()
            self._tick()
            self.save(LAST)
            if self.ranks.is_main:
                self._write_lexicon()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._finish()

    def _write_lexicon(self) -> None:
        """The model directory's ``lexicon.npz`` (the vocabulary shortlist's table) from the training pairs."""
        started = time.monotonic()
        tok = self.data.tokenizer
        vocab = (tok.src_vocab_size, tok.tgt_vocab_size)
        path = save_lexicon(lexicon_from_split(self.train_split, vocab, LexiconSettings()), self.run_dir)
        self.monitor_message(f"lexicon: {path} ({time.monotonic() - started:.1f} s)")

    def _run_epochs(self) -> None:
        tc = self.cfg.train
        while self.state.epoch < tc.epochs:
            self._check_shards()
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

    def _check_shards(self) -> None:
        """Every rank must run the same number of updates per epoch, or one would wait forever in an all-reduce."""
        counts = distributed.gather_objects(len(self.sampler))
        if len(set(counts)) > 1:
            raise NmtError(
                f"the {len(self.train_split)} training pairs cannot be shared evenly over {self.ranks.world_size} "
                f"processes at train.max_tokens={self.cfg.train.max_tokens} (batches per process: {counts}); "
                "raise train.max_tokens or start fewer processes"
            )

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
        self.callbacks.after_update(self.state.step)
        signum = distributed.max_over_ranks(self.stop_signal or 0)  # a signal to any rank stops all, here
        if signum:
            self.stop_signal = signum
            self.state.stop_reason = f"stopped by signal {signal.Signals(signum).name}"
            return False
        if self.state.step % tc.validate_every == 0:
            keep_going = self._validate()
            self._tick()
            self.save(LAST)
            return keep_going
        if tc.checkpoint_every and self.state.step % tc.checkpoint_every == 0:
            self._tick()
            self.save(LAST)
        return True

    def _validate(self) -> bool:
        """Run validation, keep best/step checkpoints; False when early stopping triggers."""
        tc = self.cfg.train
        self.callbacks.before_validation(self.state.step)
        # Rank 0 validates while the others wait for its record; all then take the same decisions from it.
        # elapsed: rank 0's training clock once this checkpoint exists (dev BLEU against wall-clock time); it
        # travels with the record, so every rank keeps the same history.
        record = distributed.main_only(lambda: {**self._validated_record(), "elapsed": self._tick()})
        samples = record.pop("samples")  # for the monitor only: the history keeps numbers
        record.update(step=self.state.step, epoch=self.state.epoch, lr=self.schedule.lr)
        self.state.history.append(record)
        self.callbacks.after_validation(record)
        self.schedule.after_validation(record["bleu"])
        if record["bleu"] > self.state.best_bleu:
            self.state.best_bleu = record["bleu"]
            self.state.bad_validations = 0
            self.save(BEST, full=False)
        elif self.schedule.counts_stalls():  # not in a budget schedule's full-lr phase
            self.state.bad_validations += 1
        self._keep_step_checkpoint()
        self.monitor.validation(record, self.state.best_bleu, samples)
        if tc.patience and self.state.bad_validations >= tc.patience:
            self.state.stop_reason = f"early stopping: no dev BLEU gain in {tc.patience} validations"
            return False
        return True

    def _validated_record(self) -> dict[str, Any]:
        """Validate the weights that `best` would hold: the weight average when it is on."""
        swapped = self.average.swapped_into(self.model) if self.average else contextlib.nullcontext()
        with swapped:
            return validate(self.model, self.data, self.cfg, self.device)

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
            **(
                {"peak_device_mib": torch.cuda.max_memory_allocated(self.device) / 2**20}
                if self.device.type == "cuda"
                else {}
            ),
            "best_dev_bleu": s.best_bleu,
            "validations": s.history,
            "device": str(self.device),
            "processes": self.ranks.world_size,
        }
        self.monitor.close(metrics)
        return metrics


def train(cfg: Config) -> dict[str, Any]:
    """Prepare data, train, and return the final metrics (also in ``<run_dir>/metrics.json``).

    Started by ``torchrun``, every process calls this: they join one process group (see
    :mod:`nmt.train.distributed`) and train one model with DistributedDataParallel.
    """
    with distributed.process_group(cfg.device, cfg.train.ddp_timeout_minutes):
        return Trainer(cfg).fit()
