"""The thread study: its settings, environments, neighbours, medians and table, and one real measurement of
each decoding command on the fixture model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nmt.config import ConfigValueError, ThreadStudyConfig
from nmt.tools.thread_study import (
    Setting,
    busy_neighbours,
    format_table,
    measure,
    settings,
    summarize,
)

FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"


def test_one_thread_gets_one_policy_and_more_threads_get_every_policy():
    cfg = ThreadStudyConfig(threads=[1, 2, 4], wait_policies=["unset", "passive", "active"])
    assert settings(cfg) == [
        Setting(1, "unset"),
        Setting(2, "unset"),
        Setting(2, "passive"),
        Setting(2, "active"),
        Setting(4, "unset"),
        Setting(4, "passive"),
        Setting(4, "active"),
    ]
    assert Setting(1, "unset").name == "1 thread, unset"
    assert Setting(2, "passive").name == "2 threads, passive"
    assert Setting(0, "unset").name == "auto threads, unset"


def test_the_policy_reaches_the_environment_and_unset_removes_an_inherited_one(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" not in Setting(0, "unset").environment()
    assert Setting(2, "passive").environment()["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in Setting(2, "unset").environment()
    assert Setting(2, "unset").environment()["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize(
    "key, value",
    [
        ("workloads", ["train", "sing"]),
        ("workloads", []),
        ("threads", [-1, 2]),
        ("wait_policies", ["lazy"]),
        ("neighbours", [-1]),
        ("repeats", 0),
        ("serve_seconds", 0.0),
        ("timeout_s", -1.0),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(key, value):
    with pytest.raises(ConfigValueError, match=key):
        ThreadStudyConfig(**{key: value})


def test_neighbours_keep_cores_busy_until_the_block_ends():
    def cpu_ticks(pid: int) -> int:  # user time, in clock ticks (/proc/PID/stat field 14)
        return int(Path(f"/proc/{pid}/stat").read_text().split()[13])

    with busy_neighbours(2) as spinners:
        assert [spinner.poll() for spinner in spinners] == [None, None]
        before = [cpu_ticks(s.pid) for s in spinners]
        time.sleep(0.5)
        spent = [cpu_ticks(s.pid) - b for s, b in zip(spinners, before)]
        assert min(spent) >= os.sysconf("SC_CLK_TCK") // 20  # each burnt >= 50 ms of CPU in 500 ms
    assert all(spinner.poll() is not None for spinner in spinners)
    with busy_neighbours(0) as none:
        assert none == []


RUNS = [
    {"workload": "evaluate", "threads": 1, "policy": "unset", "neighbours": 0, "figure": 12.0},
    {"workload": "evaluate", "threads": 1, "policy": "unset", "neighbours": 1, "figure": 20.0},
    {"workload": "evaluate", "threads": 2, "policy": "unset", "neighbours": 0, "figure": 8.0},
    {"workload": "evaluate", "threads": 2, "policy": "unset", "neighbours": 1, "figure": None},
    {"workload": "evaluate", "threads": 1, "policy": "unset", "neighbours": 0, "figure": 14.0},
    {"workload": "evaluate", "threads": 1, "policy": "unset", "neighbours": 1, "figure": 30.0},
    {"workload": "evaluate", "threads": 2, "policy": "unset", "neighbours": 0, "figure": 10.0},
    {"workload": "evaluate", "threads": 2, "policy": "unset", "neighbours": 1, "figure": 40.0},
    {"workload": "train", "threads": 2, "policy": "passive", "neighbours": 0, "figure": 3000.0},
    {"workload": "train", "threads": 2, "policy": "passive", "neighbours": 1, "figure": 1500.0},
    {"workload": "train", "threads": 2, "policy": "unset", "neighbours": 0, "figure": 4000.0},
    {"workload": "train", "threads": 2, "policy": "unset", "neighbours": 1, "figure": 1000.0},
]


def test_rows_hold_medians_and_a_timed_out_run_makes_its_median_unknown():
    rows = summarize(RUNS, [0, 1])
    assert [(r["workload"], r["threads"], r["policy"], r["median"]) for r in rows] == [
        ("evaluate", 1, "unset", {0: 13.0, 1: 25.0}),
        ("evaluate", 2, "unset", {0: 9.0, 1: None}),
        ("train", 2, "passive", {0: 3000.0, 1: 1500.0}),
        ("train", 2, "unset", {0: 4000.0, 1: 1000.0}),
    ]
    assert [r["unit"] for r in rows] == ["s", "s", "target tokens/s", "target tokens/s"]


def test_the_table_compares_each_setting_with_the_best_in_its_column():
    table = format_table(summarize(RUNS, [0, 1]), [0, 1], timeout_s=600).splitlines()
    assert table[0] == "| command | setting | 0 busy neighbours | 1 busy neighbour |"
    # seconds: lower is better, so the relative figure is best / value; tokens/s: value / best
    assert table[2] == "| evaluate | 1 thread, unset | 13.0 s (0.69) | 25.0 s (1.00) |"
    assert table[3] == "| evaluate | 2 threads, unset | 9.0 s (1.00) | > 600 s |"
    assert (
        table[4]
        == "| train | 2 threads, passive | 3,000.0 target tokens/s (0.75) | 1,500.0 target tokens/s (1.00) |"
    )
    assert (
        table[5]
        == "| train | 2 threads, unset | 4,000.0 target tokens/s (1.00) | 1,000.0 target tokens/s (0.67) |"
    )


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["translate", "serve"])
def test_each_decoding_command_is_measured_on_a_real_model(workload, tmp_path):
    cfg = ThreadStudyConfig(model_dir=str(FIXTURE), line="three one four", serve_seconds=1.0, serve_clients=1)
    figure = measure(workload, Setting(1, "passive"), cfg, tmp_path, cfg.line)
    assert figure > 0
    if workload == "translate":  # wall seconds of a process that imports torch and loads a model
        assert 0.5 < figure < 120
