"""Training under faults: SIGTERM, non-finite losses, a full disk while checkpointing, bad configs."""

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from corpus import digit_config, write_digit_corpus

from nmt.checkpoint import CheckpointError, load_checkpoint
from nmt.train import trainer as trainer_module
from nmt.train.trainer import train

REPO = Path(__file__).resolve().parents[1]


def cli_overrides(root: Path, **train) -> list[str]:
    """``scripts/train.py`` overrides for a tiny run on the digit corpus in ``root``."""
    corpus = write_digit_corpus(root / "corpus")
    settings = dict(max_tokens=200, max_minutes=0, validate_every=4, log_every=2, progress=False)
    settings.update(tensorboard=False, patience=0, lr=5e-3, **train)
    return [
        "data=text",
        *(f"data.text.{split}={corpus}/{split}" for split in ("train", "dev", "test")),
        f"data.cache_dir={root / 'cache'}",
        "tokenizer.vocab_size=40",
        *(f"model.{name}=16" for name in ("emb_size", "hidden_size", "attention_size")),
        *(f"train.{key}={value}" for key, value in settings.items()),
        "threads=1",
        f"run_dir={root / 'run'}",
    ]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the training process ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_a_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    log = open(tmp_path / "log.txt", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", *cli_overrides(tmp_path, max_steps=100_000, validate_every=50)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        csv = run / "metrics.csv"  # a train row: the loop (and its signal handler) is running
        wait_for(lambda: csv.is_file() and "\ntrain," in csv.read_text(), proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        log.close()
    output = (tmp_path / "log.txt").read_text()
    assert "Traceback" not in output
    metrics = json.loads((run / "metrics.json").read_text())
    assert "SIGTERM" in metrics["stop_reason"] and 0 < metrics["steps"] < 100_000
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["state"]["step"] == metrics["steps"] and "optimizer" in last
    assert not list(run.rglob(".tmp-*"))


def nan_on(monkeypatch, calls: set[int] | None = None, from_call: int | None = None) -> None:
    """Make the training loss NaN on the given (1-based) calls, or on every call from ``from_call`` on."""
    original, count = trainer_module.sequence_loss, [0]

    def loss(*args, **kwargs):
        sums = original(*args, **kwargs)
        count[0] += 1
        n = count[0]
        if (calls and n in calls) or (from_call and n >= from_call):
            sums.loss = sums.loss * float("nan")
        return sums

    monkeypatch.setattr(trainer_module, "sequence_loss", loss)


def test_nan_losses_are_skipped_and_counted(tmp_path, monkeypatch, capsys):
    cfg = digit_config(tmp_path, max_steps=8)
    nan_on(monkeypatch, calls={3, 4})
    before = {}
    original_update = trainer_module.Trainer._update

    def update(self, batches):  # the weights must not move on a skipped update
        before.update({k: v.clone() for k, v in self.model.state_dict().items()})
        result = original_update(self, batches)
        if result is None:
            for name, tensor in self.model.state_dict().items():
                assert torch.equal(tensor, before[name]), name
        return result

    monkeypatch.setattr(trainer_module.Trainer, "_update", update)
    metrics = train(cfg)
    assert metrics["steps"] == 8 and metrics["skipped_steps"] == 2
    assert metrics["stop_reason"] == "reached train.max_steps=8"
    err = capsys.readouterr().err
    assert "non-finite loss at step 3: update skipped (1 in a row, 1 in all)" in err
    assert "non-finite loss at step 3: update skipped (2 in a row, 2 in all)" in err
    weights = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.pt")["model"]
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_too_many_nan_losses_in_a_row_stop_with_a_usable_checkpoint(tmp_path, monkeypatch):
    cfg = digit_config(tmp_path, max_steps=50, max_bad_steps=3)
    nan_on(monkeypatch, from_call=3)
    metrics = train(cfg)
    assert metrics["steps"] == 2 and metrics["skipped_steps"] == 3
    assert metrics["stop_reason"].startswith("3 non-finite losses in a row (train.max_bad_steps=3)")
    bundle = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.pt")
    assert bundle["state"]["step"] == 2 and bundle["state"]["bad_steps"] == 3
    assert all(torch.isfinite(t).all() for t in bundle["model"].values())
    assert all(math.isfinite(v["loss"]) for v in metrics["validations"])


def test_checkpoint_every_saves_the_full_state_between_validations(tmp_path, monkeypatch):
    cfg = digit_config(tmp_path, max_steps=6, validate_every=100, checkpoint_every=2)
    saved, original = [], trainer_module.Trainer.save

    def save(self, name, full=True):
        saved.append((name, self.state.step))
        return original(self, name, full)

    monkeypatch.setattr(trainer_module.Trainer, "save", save)
    train(cfg)
    # at the end: the closing validation (best, step_*), then `last` once more
    assert saved == [("last", 2), ("last", 4), ("last", 6), ("best", 6), ("step_00000006", 6), ("last", 6)]


def test_full_disk_while_checkpointing_is_a_clear_error_in_process(tmp_path):
    cfg = digit_config(tmp_path, max_steps=12)
    ckpt = Path(cfg.run_dir) / "checkpoints"

    def fsync(fd):  # the disk fills up after the first `last` checkpoint: writing file data fails
        if (ckpt / "last.pt").exists() and stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(28, "No space left on device")
        os.fsync(fd)

    with pytest.raises(
        CheckpointError, match=r"checkpoints/\S+\.pt: cannot write checkpoint \(No space left"
    ):
        trainer_module.Trainer(cfg, fsync=fsync).fit()
    assert load_checkpoint(ckpt / "last.pt")["state"]["step"] == 4  # the previous checkpoint is intact
    assert not list(ckpt.glob(".tmp-*"))


FULL_DISK = """
import os, runpy, stat, sys
from pathlib import Path
last, real_fsync = Path(sys.argv[1]), os.fsync
def fsync(fd):
    if last.exists() and stat.S_ISREG(os.fstat(fd).st_mode):
        raise OSError(28, "No space left on device")
    real_fsync(fd)
os.fsync = fsync
sys.argv = ["scripts/train.py", *sys.argv[2:]]
runpy.run_path("scripts/train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_full_disk_through_the_script_prints_an_error_not_a_traceback(tmp_path):
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(last), *cli_overrides(tmp_path, max_steps=12)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "No space left on device" in error[0]
    assert str(last.parent) in error[0] and "resume=true" in error[0]
    assert load_checkpoint(last)["state"]["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [("train.max_steps=lots", "max_steps"), ("model.rnn_type=transformer", "rnn_type")],
)
def test_wrong_config_types_fail_before_any_work(tmp_path, override, message):
    result = subprocess.run(
        [sys.executable, "scripts/train.py", override, f"run_dir={tmp_path / 'run'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
