import os
from pathlib import Path

import pytest
import torch

from nmt.device import auto_threads, cpu_times, idle_cores, set_threads


def stat_line(user: int, system: int, idle: int, iowait: int) -> str:
    return f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


class Samples:
    """A stand-in for /proc/stat that reads as the next sample each time."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    def read_text(self, encoding: str) -> str:
        return self.texts.pop(0)


def test_cpu_times_counts_idle_and_iowait_as_not_busy(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(stat_line(user=100, system=50, idle=800, iowait=50))
    assert cpu_times(stat) == (150, 1000)
    assert cpu_times(tmp_path / "missing") is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(stat) is None


@pytest.mark.parametrize(
    "busy_share, cores, idle",
    [(0.0, 2, 2), (0.5, 2, 1), (1.0, 2, 0), (0.52, 2, 1), (0.26, 4, 3), (0.12, 4, 4)],
)
def test_idle_cores_rounds_the_busy_share_to_whole_cores(busy_share, cores, idle):
    assert idle_cores((1000, 5000), (1000 + round(busy_share * 10_000), 15_000), cores) == idle


def test_idle_cores_without_elapsed_ticks_is_every_core():
    assert idle_cores((10, 20), (10, 20), 8) == 8


def test_auto_threads_leaves_out_the_busy_cores():
    usable = len(os.sched_getaffinity(0))
    cores = os.cpu_count()
    one_core_busy = Samples(stat_line(0, 0, 0, 0), stat_line(100, 0, 100 * (cores - 1), 0))
    assert auto_threads(0.0, one_core_busy) == max(1, min(usable, cores - 1))
    all_busy = Samples(stat_line(0, 0, 0, 0), stat_line(100 * cores, 0, 0, 0))
    assert auto_threads(0.0, all_busy) == 1  # never fewer than one
    idle = Samples(stat_line(0, 0, 0, 0), stat_line(0, 0, 100 * cores, 0))
    assert auto_threads(0.0, idle) == usable
    assert auto_threads(0.0, Path("/nonexistent/stat")) == usable  # no /proc: every usable core


def test_set_threads_sets_and_returns_the_count(monkeypatch):
    monkeypatch.undo()  # the suite's one-thread stand-in for auto_threads
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        chosen = set_threads(0)
        assert 1 <= chosen <= len(os.sched_getaffinity(0)) and torch.get_num_threads() == chosen
    finally:
        torch.set_num_threads(before)


def test_threads_0_follows_omp_num_threads_when_it_is_set(monkeypatch):
    def not_called() -> int:
        raise AssertionError("auto_threads ran although OMP_NUM_THREADS was set")

    monkeypatch.setattr("nmt.device.auto_threads", not_called)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it for each process
    assert set_threads(0) == torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("nmt.device.auto_threads", lambda: 1)
    assert set_threads(0) == 1
