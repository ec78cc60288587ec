import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import load_checkpoint
from nmt.config import Config, DataConfig, ModelConfig, TextConfig, TokenizerConfig, TrainConfig
from nmt.train.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]
EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FR = ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"]


def write_corpus(root: Path, n_train: int = 240, n_dev: int = 16, seed: int = 0) -> str:
    """Digit-word sequences and their French, e.g. 'three one' -> 'trois un'."""
    gen = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_dev)):
        src, tgt = [], []
        for _ in range(n):
            digits = torch.randint(
                0, 10, (int(torch.randint(2, 6, (1,), generator=gen)),), generator=gen
            ).tolist()
            src.append(" ".join(EN[d] for d in digits))
            tgt.append(" ".join(FR[d] for d in digits))
        (root / f"{split}.en").write_text("\n".join(src) + "\n", encoding="utf-8")
        (root / f"{split}.fr").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return str(root)


def tiny_config(tmp_path: Path, **train_overrides) -> Config:
    corpus = write_corpus(tmp_path)
    train_cfg = dict(
        max_tokens=200,
        max_steps=12,
        max_minutes=0,
        validate_every=4,
        log_every=2,
        lr=5e-3,
        progress=False,
        tensorboard=False,
        patience=0,
    )
    train_cfg.update(train_overrides)
    return Config(
        data=DataConfig(
            source="text",
            text=TextConfig(train=f"{corpus}/train", dev=f"{corpus}/dev", test=f"{corpus}/test"),
            cache_dir=str(tmp_path / "cache"),
        ),
        tokenizer=TokenizerConfig(vocab_size=40),
        model=ModelConfig(emb_size=16, hidden_size=16, attention_size=16, dropout=0.1),
        train=TrainConfig(**train_cfg),
        run_dir=str(tmp_path / "run"),
        threads=1,
    )


def final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["model"]


def test_training_writes_a_complete_model_directory(tmp_path):
    cfg = tiny_config(tmp_path)
    metrics = train(cfg)
    run = Path(cfg.run_dir)
    for name in (
        "config.yaml",
        "spm.model",
        "metrics.json",
        "metrics.csv",
        "curves.png",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert metrics["steps"] == 12 and metrics["stop_reason"] == "reached train.max_steps=12"
    assert [v["step"] for v in metrics["validations"]] == [4, 8, 12]
    assert json.loads((run / "metrics.json").read_text())["parameters"] == metrics["parameters"]
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_00000004.pt", "step_00000008.pt", "step_00000012.pt"]
    bundle = load_checkpoint(run / "checkpoints" / "last.pt")
    assert set(bundle) >= {"model", "optimizer", "schedule", "sampler", "rng", "state", "config"}
    assert bundle["config"]["model"]["rnn_type"] == "gru"
    assert not list(run.rglob(".tmp-*"))


def test_learns_to_translate_digit_words(tmp_path):
    """End to end through data, model, loss, Adam, greedy search and sacrebleu: a word-for-word task."""
    cfg = tiny_config(tmp_path, max_steps=600, validate_every=200, lr=1e-2)
    cfg.model = ModelConfig(emb_size=32, hidden_size=32, attention_size=32, dropout=0.1)
    metrics = train(cfg)
    first, last = metrics["validations"][0], metrics["validations"][-1]
    assert last["loss"] < first["loss"] / 2
    assert metrics["best_dev_bleu"] > 50


def interrupt_after(monkeypatch, updates: int) -> None:
    """Deliver a real SIGINT to this process right after the given number of updates."""
    original, calls = Trainer._update, []

    def update_then_signal(self, batches):
        result = original(self, batches)
        calls.append(1)
        if len(calls) == updates:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "_update", update_then_signal)


def test_sigint_saves_last_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    whole = tiny_config(tmp_path / "a", max_steps=14)
    train(whole)

    (tmp_path / "b").mkdir()
    part = tiny_config(tmp_path / "b", max_steps=14)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 6)  # between validations (every 4 updates)
        metrics = train(part)
    assert metrics["stop_reason"] == "stopped by signal SIGINT" and metrics["steps"] == 6
    part.resume = True
    resumed = Trainer(part)
    assert resumed.state.step == 6
    resumed.fit()

    a, b = final_weights(whole.run_dir), final_weights(part.run_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_resume_falls_back_when_last_is_damaged(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=8)
    train(cfg)
    last = Path(cfg.run_dir) / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    cfg.resume = True
    cfg.train.max_steps = 10
    # step checkpoints hold weights only, so nothing can resume: a clear error, not a crash
    with pytest.raises(Exception, match="no usable checkpoint"):
        Trainer(cfg)


def test_accumulation_equals_one_large_batch(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    configs = [tiny_config(tmp_path / name) for name in ("a", "b")]
    for cfg in configs:
        cfg.model.dropout = 0.0  # both paths must see identical computations
    one, two = Trainer(configs[0]), Trainer(configs[1])
    batches = [two._batch(indices) for _, indices in zip(range(2), iter(two.sampler))]
    merged_indices = batches[0].indices.tolist() + batches[1].indices.tolist()
    one._update([one._batch(merged_indices)])
    two._update(batches)
    for p, q in zip(one.model.parameters(), two.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_config_typo_fails_before_any_work(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "train.max_stpes=3", f"run_dir={tmp_path / 'run'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "max_stpes" in result.stderr
    assert not (tmp_path / "run").exists()
