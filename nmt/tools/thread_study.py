"""Which thread settings to run with: every command under every setting, alone and beside busy neighbours.

torch's CPU kernels run on an OpenMP pool. How its threads wait between parallel regions is set once, when
the OpenMP library loads, by ``OMP_WAIT_POLICY``: ``active`` spins, ``passive`` sleeps at once, and unset
(libgomp's default) spins for a while before sleeping. Spinning wins while every thread has a core of its own;
it loses badly when another process needs one of those cores, because the spinning thread and the thread it
waits for then share a core. This study measures each command in a fresh process per setting, so each
process reads the policy at start-up as a user's command would:

- ``train``: ``nmt benchmark model_dir=null``, steady training target tokens/s (higher is better);
- ``evaluate``: wall seconds to translate and score the test split with beam 5;
- ``translate``: wall seconds of ``echo LINE | nmt translate``, process start to exit;
- ``serve``: requests/s of ``serve_clients`` clients for ``serve_seconds`` against a fresh ``nmt serve``.

A neighbour is a process that keeps one core busy (a Python loop). Runs are interleaved across settings and
neighbour counts, ``repeats`` rounds of them, and each figure is the median of its rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt.config import ThreadStudyConfig
from nmt.errors import NmtError
from nmt.tools.load_test import run_load, server_limits

# workload -> (what the figure is, True when higher is better)
FIGURES = {
    "train": ("target tokens/s", True),
    "evaluate": ("s", False),
    "translate": ("s", False),
    "serve": ("requests/s", True),
}
SERVER_START_S = 120.0  # a server that does not answer /info by then counts as failed


@dataclass(frozen=True)
class Setting:
    """One way to run a command: torch's thread count (0: the command's automatic choice, the cores idle at its
    start) and the OpenMP wait policy (``unset``: libgomp's own)."""

    threads: int
    policy: str

    @property
    def name(self) -> str:
        count = (
            "auto threads" if self.threads == 0 else f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        )
        return f"{count}, {self.policy}"

    def environment(self) -> dict[str, str]:
        """This process's environment with the policy applied, and without OMP_NUM_THREADS, which would decide
        the automatic setting's count."""
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("OMP_NUM_THREADS", None)
        if self.policy != "unset":
            env["OMP_WAIT_POLICY"] = self.policy.upper()
        return env


def settings(cfg: ThreadStudyConfig) -> list[Setting]:
    """Every thread count with every policy, except that one thread has nothing to wait for: it gets the
    first policy only."""
    return [
        Setting(threads, policy)
        for threads in cfg.threads
        for policy in (cfg.wait_policies[:1] if threads == 1 else cfg.wait_policies)
    ]


@contextlib.contextmanager
def busy_neighbours(count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` processes that each keep a core busy until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5 if count else 0.0)  # let them reach the loop
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def _nmt(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt", *args]


def _run(argv: list[str], setting: Setting, timeout_s: float, stdin: str = "") -> float:
    """Wall seconds of one command, process start to exit; NmtError with its output's tail if it fails."""
    started = time.perf_counter()
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=setting.environment(), timeout=timeout_s
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise NmtError(f"thread study: `{' '.join(argv[2:])}` failed:\n{done.stderr[-2000:]}")
    return seconds


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_rate(cfg: ThreadStudyConfig, setting: Setting, sentences: list[str]) -> float:
    port = _free_port()
    argv = _nmt("serve", f"model_dir={cfg.model_dir}", f"threads={setting.threads}", f"port={port}")
    server = subprocess.Popen(
        argv, env=setting.environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                raise NmtError(f"thread study: `nmt serve` exited:\n{server.stderr.read()[-2000:]}")
            try:
                asyncio.run(server_limits("127.0.0.1", port, "", 1.0))
                break
            except (OSError, NmtError):
                if time.monotonic() > deadline:
                    raise NmtError(
                        f"thread study: the server did not answer in {SERVER_START_S:.0f} s"
                    ) from None
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        summary = asyncio.run(run_load(url, cfg.serve_clients, None, cfg.serve_seconds, sentences)).summary()
        if summary["errors"] or summary["lost"]:
            raise NmtError(
                f"thread study: the server answered {summary['errors']} errors, lost {summary['lost']}"
            )
        return float(summary["rps"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(workload: str, setting: Setting, cfg: ThreadStudyConfig, scratch: Path, line: str) -> float:
    """One figure of ``workload`` under ``setting`` (its unit: :data:`FIGURES`)."""
    threads = f"threads={setting.threads}"
    if workload == "train":
        output = scratch / "train.json"
        _run(
            _nmt(
                "benchmark",
                "model_dir=null",
                f"config.threads={setting.threads}",
                f"train_updates={cfg.train_updates}",
                "warmup_updates=5",
                "repeats=1",
                f"output={output}",
            ),
            setting,
            cfg.timeout_s,
        )
        return json.loads(output.read_text(encoding="utf-8"))["train_target_tokens_per_second"]
    if workload == "evaluate":
        argv = _nmt("evaluate", f"model_dir={cfg.model_dir}", threads, f"output={scratch / 'eval.json'}")
        return _run(argv, setting, cfg.timeout_s)
    if workload == "translate":
        return _run(
            _nmt("translate", f"model_dir={cfg.model_dir}", threads), setting, cfg.timeout_s, line + "\n"
        )
    return _serve_rate(cfg, setting, [line])


def run_study(cfg: ThreadStudyConfig) -> dict[str, Any]:
    """Every workload x setting x neighbour count, ``cfg.repeats`` interleaved rounds; a figure that timed out
    is None. Returns ``{"runs": [...], "rows": [...]}`` (rows: medians, as :func:`format_table` prints)."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="thread-study-") as scratch:
        for round_ in range(cfg.repeats):
            for workload in cfg.workloads:
                for setting in settings(cfg):
                    for neighbours in cfg.neighbours:
                        with busy_neighbours(neighbours):
                            try:
                                figure: float | None = measure(
                                    workload, setting, cfg, Path(scratch), cfg.line
                                )
                            except subprocess.TimeoutExpired:
                                figure = None
                        run = {
                            "round": round_,
                            "workload": workload,
                            "threads": setting.threads,
                            "policy": setting.policy,
                            "neighbours": neighbours,
                            "figure": figure,
                        }
                        print(json.dumps(run), file=sys.stderr, flush=True)
                        runs.append(run)
    return {"runs": runs, "rows": summarize(runs, cfg.neighbours)}


def summarize(runs: list[dict[str, Any]], neighbours: list[int]) -> list[dict[str, Any]]:
    """One row per (workload, threads, policy): the median figure per neighbour count (None if any run timed
    out: its median is unknown), in the order first seen."""
    rows: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        key = (run["workload"], run["threads"], run["policy"])
        row = rows.setdefault(key, {"workload": key[0], "threads": key[1], "policy": key[2], "runs": {}})
        row["runs"].setdefault(run["neighbours"], []).append(run["figure"])
    for row in rows.values():
        row["median"] = {
            n: None if None in figures else statistics.median(figures)
            for n, figures in row.pop("runs").items()
        }
        row["unit"], _ = FIGURES[row["workload"]]
    return list(rows.values())


def format_table(rows: list[dict[str, Any]], neighbours: list[int], timeout_s: float) -> str:
    """A markdown table: a column per neighbour count, each with its figure relative to the best setting of
    that workload and neighbour count (1.00 = best)."""
    header = ["command", "setting", *[f"{n} busy neighbour{'s' if n != 1 else ''}" for n in neighbours]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        _, higher = FIGURES[row["workload"]]
        cells = []
        for n in neighbours:
            value = row["median"].get(n)
            peers = [r["median"].get(n) for r in rows if r["workload"] == row["workload"]]
            known = [p for p in peers if p is not None]
            if value is None:
                cells.append(f"> {timeout_s:.0f} s")
                continue
            best = max(known) if higher else min(known)
            relative = value / best if higher else best / value
            cells.append(f"{value:,.1f} {row['unit']} ({relative:.2f})")
        setting = Setting(row["threads"], row["policy"]).name
        lines.append(f"| {row['workload']} | {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def thread_study(cfg: ThreadStudyConfig) -> dict[str, Any]:
    """``scripts/thread_study.py``: run the study, print its table, write ``cfg.output`` (JSON)."""
    if any(w != "train" for w in cfg.workloads) and not (Path(cfg.model_dir) / "config.yaml").is_file():
        raise NmtError(
            f"model_dir={cfg.model_dir}: not a model directory (evaluate, translate and serve need one)"
        )
    results = run_study(cfg)
    Path(cfg.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(format_table(results["rows"], cfg.neighbours, cfg.timeout_s))
    return results
