import os
import subprocess
import sys
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


KEEP_FREED_PROBE = """
import resource, sys, torch
from nmt.device import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults, peaks = [], []
for step in range(60):
    rows = (4000, 5000, 4500, 5500)[step % 4]  # logits of batches of different sizes (43-59 MB), as in training
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    logits = torch.full((rows, 2674), 0.5)  # writes every page, as random draws do, at a fraction of their cost
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = torch.exp(log_probs)
    del logits, log_probs, probs
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults.append(usage.ru_minflt - before)
    peaks.append(usage.ru_maxrss)
print(applied, sum(faults[-20:]), peaks[-1] - peaks[29])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_the_page_faults_of_a_steady_loop():
    """A loop of large allocations in four sizes faults its pages in again at every step under glibc's defaults
    (blocks above 32 MiB are always mmapped) and not at all once keep_freed_memory applied, and its peak memory
    stops growing after the first steps (fresh interpreters: the setting is process-wide)."""

    def probe(mode: str) -> tuple[str, int, int]:
        applied, faults, growth_kib = subprocess.run(
            [sys.executable, "-c", KEEP_FREED_PROBE, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return applied, int(faults), int(growth_kib)

    _, default_faults, _ = probe("default")
    applied, kept_faults, kept_growth = probe("keep")
    assert applied == "True"
    assert default_faults >= 20 * 10_000  # each step faults in its three 43-59 MB blocks, 4 KiB at a time
    assert kept_faults < 100
    assert kept_growth == 0  # KiB of peak RSS added over the last 30 steps
