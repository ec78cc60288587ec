import copy
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
from corpus import digit_config, trained_digit_model

from nmt.checkpoint import load_checkpoint
from nmt.config import Config
from nmt.data.batching import collate
from nmt.errors import NmtError
from nmt.train.callbacks import TrainerCallbacks
from nmt.train.loss import sequence_loss
from nmt.train.schedules import budget_lr
from nmt.train.trainer import Trainer, train
from nmt.vocab import PAD_ID

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **train_overrides) -> Config:
    return digit_config(tmp_path, **train_overrides)


def metric_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["kind"], row["step"]) for row in csv.DictReader(handle)]


def final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["model"]


def final_state(run_dir: str) -> dict:
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["state"]


def test_validation_scores_bleu_and_chrf_and_spends_nothing_on_ter(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation computed TER, which no validation record keeps")

    monkeypatch.setattr(sacrebleu.metrics.TER, "_extract_corpus_statistics", refuse)
    cfg = tiny_config(tmp_path, max_steps=4, validate_every=2)
    train(cfg)
    history = final_state(cfg.run_dir)["history"]
    assert [record["step"] for record in history] == [2, 4]
    for record in history:
        assert {"bleu", "chrf", "loss"} <= set(record) and "ter" not in record
        assert 0.0 <= record["bleu"] <= 100.0 and 0.0 <= record["chrf"] <= 100.0


def test_training_writes_a_complete_model_directory(tmp_path):
    cfg = tiny_config(tmp_path)
    metrics = train(cfg)
    run = Path(cfg.run_dir)
    for name in (
        "config.yaml",
        "spm.src.model",
        "spm.tgt.model",
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


@pytest.mark.slow
def test_learns_to_translate_digit_words(tmp_path):
    """End to end through data, model, loss, Adam, greedy search and sacrebleu: a word-for-word task."""
    run_dir = trained_digit_model(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first, last = metrics["validations"][0], metrics["validations"][-1]
    assert last["loss"] < first["loss"] / 2
    assert metrics["best_dev_bleu"] > 50


class InterruptAfter(TrainerCallbacks):
    """Deliver a real SIGINT to this process right after the given update."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_update(self, step: int) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def interrupted_and_resumed_equals_uninterrupted(tmp_path: Path, **train_overrides) -> tuple[Config, Config]:
    """Train 14 updates straight through, and again with a SIGINT after update 6 and a resume; the two runs'
    final training states must be equal. Returns both configs (uninterrupted, resumed)."""
    (tmp_path / "a").mkdir()
    whole = tiny_config(tmp_path / "a", max_steps=14, **train_overrides)
    train(whole)

    (tmp_path / "b").mkdir()
    part = tiny_config(tmp_path / "b", max_steps=14, **train_overrides)
    metrics = Trainer(part, callbacks=InterruptAfter(6)).fit()  # between validations (every 4 updates)
    assert metrics["stop_reason"] == "stopped by signal SIGINT" and metrics["steps"] == 6
    part.resume = True
    resumed = Trainer(part)
    assert resumed.state.step == 6
    resumed.fit()

    a, b = final_weights(whole.run_dir), final_weights(part.run_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    return whole, part


@pytest.mark.slow
def test_sigint_saves_last_and_resume_equals_uninterrupted(tmp_path):
    whole, part = interrupted_and_resumed_equals_uninterrupted(tmp_path)
    # metrics.csv of the resumed run reads like the uninterrupted one: no replayed or duplicated rows
    rows, whole_rows = (metric_rows(Path(cfg.run_dir) / "metrics.csv") for cfg in (part, whole))
    assert rows == whole_rows


@pytest.mark.slow
def test_resume_is_exact_with_the_budget_schedule_and_the_weight_average(tmp_path):
    whole, part = interrupted_and_resumed_equals_uninterrupted(
        tmp_path, schedule="linear", warmup_steps=3, ema_decay=0.9
    )
    a, b = (load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.pt") for cfg in (whole, part))
    for name in a["ema"]:
        torch.testing.assert_close(a["ema"][name], b["ema"][name], rtol=0, atol=1e-6)
    assert [r["lr"] for r in a["state"]["history"]] == [r["lr"] for r in b["state"]["history"]]


def test_linear_schedule_reaches_min_lr_and_best_holds_the_weight_average(tmp_path):
    cfg = tiny_config(tmp_path, schedule="linear", warmup_steps=0, decay_start=0.0, ema_decay=0.9, patience=0)
    metrics = train(cfg)
    tc = cfg.train
    # The lr a validation records is the one of the update before it: update k of 12 runs at 1 - (k - 1) / 12.
    assert [v["lr"] for v in metrics["validations"]] == [
        budget_lr(tc, step, (step - 1) / 12) for step in (4, 8, 12)
    ]
    assert metrics["validations"][-1]["lr"] == pytest.approx(tc.min_lr + (tc.lr - tc.min_lr) / 12)
    ckpt = Path(cfg.run_dir) / "checkpoints"
    last, final_step = load_checkpoint(ckpt / "last.pt"), load_checkpoint(ckpt / "step_00000012.pt")
    for name, average in last["ema"].items():
        assert torch.equal(final_step["model"][name], average)  # validated and kept: the average
        assert not torch.equal(last["model"][name], average)  # `last` resumes the trained weights
    best_step = max(metrics["validations"], key=lambda v: v["bleu"])["step"]
    best, kept = load_checkpoint(ckpt / "best.pt"), load_checkpoint(ckpt / f"step_{best_step:08d}.pt")
    assert best["state"]["step"] == best_step
    assert all(torch.equal(best["model"][k], v) for k, v in kept["model"].items())


def test_resume_falls_back_when_last_is_damaged(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=10)  # `last` is saved at steps 4, 8 and 10
    train(cfg)
    ckpt = Path(cfg.run_dir) / "checkpoints"
    assert load_checkpoint(ckpt / "last.prev.pt")["state"]["step"] == 8
    last = ckpt / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    cfg.resume = True
    cfg.train.max_steps = 12
    capsys.readouterr()
    resumed = Trainer(cfg)
    assert resumed.state.step == 8
    out = capsys.readouterr().out
    assert f"warning: skipped damaged checkpoint (moved to last.pt.damaged): {last}: checksum mismatch" in out
    assert f"resumed from {ckpt / 'last.prev.pt'} at step 8" in out
    assert (ckpt / "last.pt.damaged").is_file() and not last.exists()
    assert resumed.fit()["steps"] == 12
    assert load_checkpoint(last)["state"]["step"] == 12
    # validated at 12 (saves `last`), then `last` again at the end: both hold step 12
    assert load_checkpoint(ckpt / "last.prev.pt")["state"]["step"] == 12


def test_resume_with_every_full_state_damaged_is_a_clear_error(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=8)
    train(cfg)
    for name in ("last.pt", "last.prev.pt"):
        path = Path(cfg.run_dir) / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:100])
    cfg.resume = True
    with pytest.raises(
        NmtError, match="no usable training checkpoint: .*last.pt: checksum mismatch.*last.prev.pt"
    ):
        Trainer(cfg)


class Recorder(TrainerCallbacks):
    """Records every hook call, and every fsync with the temp files present at that moment."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.ckpt_dir, self.calls, self.records = ckpt_dir, [], []

    def fsync(self, fileno: int) -> None:
        self.calls.append(("fsync", sorted(p.name for p in self.ckpt_dir.glob(".tmp-*"))))
        os.fsync(fileno)

    def before_resume(self) -> None:
        self.calls.append(("before_resume", None))

    def after_resume(self, path: Path | None, step: int) -> None:
        self.calls.append(("after_resume", (path.name if path else None, step)))

    def before_update(self, step: int) -> None:
        self.calls.append(("before_update", step))

    def after_update(self, step: int) -> None:
        self.calls.append(("after_update", step))

    def before_validation(self, step: int) -> None:
        self.calls.append(("before_validation", step))

    def after_validation(self, record: dict) -> None:
        self.records.append(record)
        self.calls.append(("after_validation", record["step"]))

    def before_save(self, path: Path) -> None:
        self.calls.append(("before_save", path.name))

    def after_save(self, path: Path) -> None:
        self.calls.append(("after_save", path.name))


def updates(*steps: int) -> list[tuple]:
    return [call for step in steps for call in (("before_update", step), ("after_update", step))]


def validation(step: int) -> list[tuple]:
    return [("before_validation", step), ("after_validation", step)]


def write(name: str) -> list[tuple]:
    """One checkpoint write: the temp file's data is synced while it exists, then the directory after the rename."""
    return [("before_save", name), ("fsync", [f".tmp-{name}"]), ("fsync", []), ("after_save", name)]


def test_hooks_and_fsync_fire_in_order_with_their_steps(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=6, validate_every=4)
    cfg.resume = True  # on an empty run directory: a fresh start
    ckpt_dir = Path(cfg.run_dir) / "checkpoints"
    first = Recorder(ckpt_dir)
    Trainer(cfg, callbacks=first, fsync=first.fsync).fit()
    improved = first.records[1]["bleu"] > first.records[0]["bleu"]  # `best` is rewritten only on a gain
    assert first.calls == [
        ("before_resume", None),
        ("after_resume", (None, 0)),
        *updates(1, 2, 3, 4),
        *validation(4),
        *write("best.pt"),
        *write("step_00000004.pt"),
        *write("last.pt"),
        *updates(5, 6),
        *validation(6),  # the closing validation of a run that stopped between validations
        *(write("best.pt") if improved else []),
        *write("step_00000006.pt"),
        *write("last.pt"),
    ]

    cfg.train.max_steps = 7
    second = Recorder(ckpt_dir)
    Trainer(cfg, callbacks=second, fsync=second.fsync).fit()
    assert second.calls[:4] == [("before_resume", None), ("after_resume", ("last.pt", 6)), *updates(7)]


def test_subword_sampling_draws_fresh_segmentations_of_the_same_text(tmp_path):
    cfg = tiny_config(tmp_path, subword_alpha=0.1)
    trainer = Trainer(cfg)
    tok, indices = trainer.data.tokenizer, next(iter(trainer.sampler))
    texts = trainer.data.splits["train"][indices]
    best = collate(tok.encode_src(texts["src"]), tok.encode_tgt(texts["tgt"]), indices)

    def segmentations(batch) -> tuple[list[list[int]], list[list[int]]]:
        src = [row[: n - 1].tolist() for row, n in zip(batch.src, batch.src_lengths)]
        tgt = [[i for i in row.tolist() if i != PAD_ID][:-1] for row in batch.tgt_out]
        return src, tgt

    drawn = [segmentations(trainer._batch(indices)) for _ in range(3)]
    for src, tgt in drawn:  # every draw spells the same sentences
        assert [tok.decode_src(s) for s in src] == texts["src"]
        assert [tok.decode_tgt(t) for t in tgt] == texts["tgt"]
    assert len({repr(d) for d in drawn}) > 1 and drawn[0] != segmentations(best)  # and the draws differ


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


def test_an_update_is_clipped_adam_on_the_summed_loss(tmp_path):
    """The trainer's (fused) Adam update equals the textbook one: per-token loss -> clip -> unfused Adam."""
    cfg = tiny_config(tmp_path)
    cfg.model.dropout = 0.0  # the reference must see the same computation
    cfg.train.clip_norm = 0.05  # small enough to clip
    trainer = Trainer(cfg)
    reference = copy.deepcopy(trainer.model)
    tc = cfg.train
    adam = torch.optim.Adam(reference.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas), foreach=False)
    batches = [trainer._batch(indices) for _, indices in zip(range(3), iter(trainer.sampler))]
    for batch in batches:
        trainer._update([batch])
        for (
            group
        ) in adam.param_groups:  # the rate the budget schedule set for this update (it stays after it)
            group["lr"] = trainer.optimizer.param_groups[0]["lr"]
        logits, _ = reference(batch.src, batch.src_lengths, batch.tgt_in)
        sums = sequence_loss(logits, batch.tgt_out, tc.label_smoothing, PAD_ID)
        (sums.loss / sums.n_tokens).backward()
        assert torch.nn.utils.clip_grad_norm_(reference.parameters(), tc.clip_norm) > tc.clip_norm
        adam.step()
        adam.zero_grad()
    assert trainer.optimizer.defaults["fused"]
    for p, q in zip(trainer.model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
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


def test_each_validation_shows_three_fixed_dev_translations(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path, tensorboard=True)
    metrics = train(cfg)
    dev_src = (tmp_path / "corpus" / "dev.en").read_text(encoding="utf-8").splitlines()
    dev_ref = (tmp_path / "corpus" / "dev.fr").read_text(encoding="utf-8").splitlines()
    shown = [0, 7, 15]  # first, middle and last of the 16 dev sentences, at every validation
    log = capsys.readouterr().err.splitlines()
    starts = [i for i, line in enumerate(log) if line.startswith("[valid] step ")]
    assert len(starts) == 3
    for start in starts:
        block = log[start + 1 : start + 10]
        for number, line in enumerate(shown, start=1):
            source, reference, hypothesis = block[3 * number - 3 : 3 * number]
            assert source == f"[valid]   example {number} source:     {dev_src[line]}"
            assert reference == f"[valid]   example {number} reference:  {dev_ref[line]}"
            assert hypothesis.startswith(f"[valid]   example {number} hypothesis: ")
    # The translations are for the person watching: the numeric history (metrics.json, checkpoints) has none.
    assert all("samples" not in record for record in metrics["validations"])
    assert all("samples" not in record for record in final_state(cfg.run_dir)["history"])
    events = EventAccumulator(str(Path(cfg.run_dir) / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    for number, line in enumerate(shown, start=1):
        texts = events.Tensors(f"valid/example_{number}/text_summary")
        assert [t.step for t in texts] == [4, 8, 12]
        first_line = texts[0].tensor_proto.string_val[0].decode("utf-8").splitlines()[0]
        assert first_line == f"    source:     {dev_src[line]}"


def test_early_stopping_waits_for_the_budget_schedules_decay(tmp_path):
    """With patience 1, a stall stops the run only once the linear schedule's decay has begun: update s is taken
    at progress (s - 1) / 20, so validations from step 12 on count; the tiny model stalls before that too."""
    cfg = tiny_config(
        tmp_path,
        schedule="linear",
        decay_start=0.5,
        warmup_steps=0,
        patience=1,
        validate_every=2,
        max_steps=20,
    )
    train(cfg)
    state = final_state(cfg.run_dir)
    best, stalls_before_decay, expected_stop = -1.0, 0, 20
    for record in state["history"]:
        if record["bleu"] > best:
            best = record["bleu"]
        elif (record["step"] - 1) / 20 < 0.5:
            stalls_before_decay += 1
        else:
            expected_stop = record["step"]
            break
    assert stalls_before_decay > 0  # the rule before 2026-12-06 would have stopped there
    assert state["step"] == expected_stop
    assert expected_stop == 20 or state["stop_reason"] == "early stopping: no dev BLEU gain in 1 validations"
