"""Monitor: the progress bar against the budget that stops the run, validation lines and dev translations."""

import pytest

from nmt.config import TrainConfig
from nmt.train.monitor import Monitor, Progress, budget_progress, sample_lines


def _cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 100, "max_steps": 0, "max_minutes": 0, **overrides})


def test_max_steps_is_the_budget_when_it_comes_before_the_epochs():
    assert budget_progress(_cfg(max_steps=500), 10, 120, 30.0) == Progress(120, 500, "upd")
    assert budget_progress(_cfg(max_steps=5000, epochs=3), 10, 12, 30.0) == Progress(12, 30, "upd")


def test_only_epochs_count_epochs_times_updates_per_epoch():
    assert budget_progress(_cfg(epochs=4), 25, 60, 9.0) == Progress(60, 100, "upd")


def test_max_minutes_counts_training_minutes():
    assert budget_progress(_cfg(max_minutes=30.0), 1000, 10, 90.0) == Progress(1.5, 30.0, "min")
    assert budget_progress(_cfg(max_minutes=30.0), 1000, 0, 0.0) == Progress(0.0, 30.0, "min")


@pytest.mark.parametrize(
    ("step", "elapsed", "expected"),
    [
        (100, 600.0, Progress(10.0, 20.0, "min")),  # half the time, a tenth of the updates: time ends it
        (800, 600.0, Progress(800, 1000, "upd")),  # 80 % of the updates at half the time: updates end it
    ],
)
def test_with_two_budgets_the_one_further_along_ends_the_run(step, elapsed, expected):
    assert budget_progress(_cfg(max_steps=1000, max_minutes=20.0), 10_000, step, elapsed) == expected


@pytest.fixture
def make_monitor(tmp_path):
    """``make_monitor(cfg, **kwargs)``: a Monitor in a fresh directory (no TensorBoard), closed after the test."""
    made: list[Monitor] = []

    def make(cfg: TrainConfig, updates_per_epoch: int = 1000, **kwargs) -> Monitor:
        run_dir = tmp_path / f"run{len(made)}"
        run_dir.mkdir()
        cfg.tensorboard = False
        made.append(Monitor(run_dir, cfg, updates_per_epoch, **kwargs))
        return made[-1]

    yield make
    for monitor in made:
        monitor.bar.close()
        monitor.csv_file.close()


def test_the_bar_starts_where_a_resumed_run_continues(make_monitor):
    monitor = make_monitor(_cfg(max_steps=200), resume_step=50, resume_elapsed=100.0)
    assert (monitor.bar.n, monitor.bar.total, monitor.bar.unit) == (50, 200, "upd")
    monitor.update(51, 1.0, 1.0, 1e-3, 10, 101.0)
    assert monitor.bar.n == 51
    timed = make_monitor(_cfg(max_minutes=10.0), resume_step=50, resume_elapsed=120.0)
    assert (timed.bar.n, timed.bar.total, timed.bar.unit) == (2.0, 10.0, "min")
    timed.update(51, 1.0, 1.0, 1e-3, 10, 150.0)
    assert timed.bar.n == pytest.approx(2.5)
    assert "2.5/10 min" in str(timed.bar)


def test_the_bar_switches_to_the_budget_that_overtakes(make_monitor):
    monitor = make_monitor(_cfg(max_steps=10, max_minutes=10.0))
    monitor.update(1, 1.0, 1.0, 1e-3, 10, 3.0)  # a tenth of the updates, 0.5 % of the time
    assert (monitor.bar.n, monitor.bar.total, monitor.bar.unit) == (1, 10, "upd")
    monitor.update(2, 1.0, 1.0, 1e-3, 10, 180.0)  # then a slow update: 30 % of the time, 20 % of the updates
    assert (monitor.bar.n, monitor.bar.total, monitor.bar.unit) == (3.0, 10.0, "min")
    assert monitor.bar.initial == 3.0  # the rate (and ETA) counts from the switch


def test_sample_lines_align_the_three_texts():
    sample = {"source": "deux un", "reference": "two one", "hypothesis": "two"}
    assert sample_lines(sample) == ["source:     deux un", "reference:  two one", "hypothesis: two"]


class RecordingWriter:
    def __init__(self) -> None:
        self.texts: list[tuple[str, str, int]] = []

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.texts.append((tag, text, step))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        pass


def test_validation_logs_and_sends_the_dev_translations(make_monitor, capsys):
    monitor = make_monitor(_cfg(max_steps=10, progress=False))
    monitor.tensorboard = RecordingWriter()
    record = {
        "step": 8,
        "epoch": 1,
        "bleu": 12.5,
        "chrf": 30.0,
        "loss": 2.0,
        "ppl": 7.39,
        "lr": 1e-3,
        "seconds": 1,
    }
    samples = [
        {"source": "un", "reference": "one", "hypothesis": "one"},
        {"source": "deux", "reference": "two", "hypothesis": "three"},
    ]
    monitor.validation(record, 12.5, samples)
    log = capsys.readouterr().err.splitlines()
    assert log[0].startswith("[valid] step 8 epoch 1: dev BLEU 12.50")
    assert log[1:] == [
        "[valid]   example 1 source:     un",
        "[valid]   example 1 reference:  one",
        "[valid]   example 1 hypothesis: one",
        "[valid]   example 2 source:     deux",
        "[valid]   example 2 reference:  two",
        "[valid]   example 2 hypothesis: three",
    ]
    assert monitor.tensorboard.texts == [
        ("valid/example_1", "    source:     un\n    reference:  one\n    hypothesis: one", 8),
        ("valid/example_2", "    source:     deux\n    reference:  two\n    hypothesis: three", 8),
    ]
