"""Kill-anywhere drill: SIGKILL a training run at random moments, resume it each time, and prove nothing was lost.

The drill trains twice with the same config and seed: once without interruption (the reference), and once in
``kills + 1`` lives, each a fresh ``resume=true`` process that the drill kills with SIGKILL, the last one left to
finish. Kill ``i`` of ``N`` is aimed at a random update in the ``i``-th of ``N`` equal slices of
``train.max_steps``, so the kills spread over the whole run, and at one of four kinds of moments, in turn:

- ``step``        a random moment within that update,
- ``validation``  a random moment into the first validation from that update on,
- ``checkpoint``  the first checkpoint write from that update on, while its temp file exists (mid-write),
- ``startup``     a random moment after the process starts (imports, data, loading the checkpoint).

The killed run reports what it is doing through one line per phase in an events file, written by the trainer's
hooks (:class:`EventLog`, see :mod:`nmt.train.callbacks`), which observe and change nothing, so the run computes
exactly what an unwatched one does. In the killed run the trainer's checkpoint fsync also sleeps ``slow_fsync``
seconds per file (a slow disk) so that a kill aimed at a write lands inside it. The drill then checks that after every kill each
checkpoint on disk loads, that the next life resumed, and at the end that no temp file is left and that every
checkpoint of the reference run (weights) is bit-identical in the interrupted run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nmt.checkpoint import CHECKPOINT_DIR, TEMP_PREFIX
from nmt.config import Config, FaultDrillConfig, TextConfig, load_config, save_config
from nmt.errors import NmtError
from nmt.tools.toy_corpus import write_synthetic_corpus
from nmt.train.callbacks import TrainerCallbacks

KILL_MODES = ("step", "validation", "checkpoint", "startup")
_MARKER = ".fault-drill"
_POLL = 0.002  # seconds between looks at the killed run


# ------------------------------------------------------------------------------------ the killed process
class EventLog(TrainerCallbacks):
    """Trainer hooks that write one line per phase, ``<time> <kind> <arg>``, to an events file. ``os.write`` on
    an ``O_APPEND`` descriptor: once a hook returns, its line survives a SIGKILL."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def emit(self, kind: str, arg: object = "") -> None:
        os.write(self.fd, f"{time.time():.6f} {kind} {arg}\n".encode())

    def before_resume(self) -> None:
        self.emit("resume")

    def after_resume(self, path: Path | None, step: int) -> None:
        self.emit("resumed", f"{path.name if path else '-'} {step}")

    def before_update(self, step: int) -> None:
        self.emit("step", step)

    def after_update(self, step: int) -> None:
        self.emit("updated", step)

    def before_validation(self, step: int) -> None:
        self.emit("validate", step)

    def after_validation(self, record: dict[str, object]) -> None:
        self.emit("validated", record["step"])

    def before_save(self, path: Path) -> None:
        self.emit("save", path.name)

    def after_save(self, path: Path) -> None:
        self.emit("saved", path.name)


def slow_disk_fsync(seconds: float) -> Callable[[int], None]:
    """``os.fsync`` on a slow disk: a file's data takes ``seconds`` longer (a directory's does not), so that the
    checkpoint's temp file exists that long and a kill aimed at the write lands inside it."""

    def fsync(fileno: int) -> None:
        if stat.S_ISREG(os.fstat(fileno).st_mode):
            time.sleep(seconds)
        os.fsync(fileno)

    return fsync


def run_instrumented(config_path: str, events_path: str, fsync_delay: float) -> None:
    """Train the config in ``config_path``, logging each phase to ``events_path`` (the drill's child process)."""
    events = EventLog(events_path)
    events.emit("start")
    from nmt.train.trainer import Trainer

    fsync = slow_disk_fsync(fsync_delay) if fsync_delay > 0 else os.fsync
    Trainer(load_config(config_path, Config), callbacks=events, fsync=fsync).fit()
    events.emit("done")


# ----------------------------------------------------------------------------------------- the drill
@dataclass
class Event:
    time: float
    kind: str
    arg: str


@dataclass
class Life:
    """One training process and the events it has written so far."""

    proc: subprocess.Popen
    events_path: Path
    started: float
    events: list[Event] = field(default_factory=list)
    _offset: int = 0

    def read(self) -> list[Event]:
        if self.events_path.exists():
            with open(self.events_path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._offset += len(complete)
            for line in complete.decode().splitlines():
                stamp, kind, arg = (line.split(" ", 2) + ["", ""])[:3]
                self.events.append(Event(float(stamp), kind, arg.strip()))
        return self.events

    def first(self, kind: str, nth: int = 1) -> Event | None:
        found = [e for e in self.events if e.kind == kind]
        return found[nth - 1] if len(found) >= nth else None


@dataclass
class Timing:
    """Durations measured on the reference run, to aim kills at the killed run."""

    startup: float  # process start → first update (updated from each life of the killed run)
    update: float  # one update, without the validations and checkpoints between updates
    validation: float  # one validation, without its checkpoints


@dataclass
class Kill:
    number: int
    aimed: str  # one of KILL_MODES
    target: int  # the update it aims at (not for startup)
    landed: str = ""
    step: int = 0  # the update in progress (or the last one started); 0: none in this life
    temps: list[str] = field(default_factory=list)  # temp files present at the kill
    checkpoints: str = ""  # "N ok" or what failed to load
    resumed: str = ""  # where the next life resumed
    survived: bool = False

    @property
    def aim(self) -> str:
        return self.aimed if self.aimed == "startup" else f"{self.aimed} from update {self.target}"


@dataclass
class DrillReport:
    kills: list[Kill]
    planned: int
    reference_step: int = 0
    final_step: int = 0
    checkpoints: str = ""
    temps_left: list[str] = field(default_factory=list)
    compared: int = 0  # tensors compared
    differences: list[str] = field(default_factory=list)
    finished_early: bool = False
    failure: str = ""

    @property
    def survived(self) -> int:
        return sum(k.survived for k in self.kills)

    @property
    def ok(self) -> bool:
        return (
            not self.failure
            and self.survived == len(self.kills) == self.planned
            and not self.temps_left
            and not self.differences
            and self.compared > 0
            and self.checkpoints.endswith("all load")
        )


def _fresh_work_dir(path: Path) -> None:
    if path.exists():
        if not path.is_dir() or (any(path.iterdir()) and not (path / _MARKER).is_file()):
            raise NmtError(
                f"work_dir={path}: exists and holds no earlier fault drill; choose another work_dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / _MARKER).touch()


def training_config(cfg: FaultDrillConfig, run_dir: Path, corpus: TextConfig | None) -> Config:
    """The drill's training config: the inherited fields, with ``run_dir`` and the drill's corpus (if any)."""
    if cfg.train.max_minutes or not cfg.train.max_steps:
        raise NmtError(
            "the fault drill compares two runs, so they need a step budget: set train.max_minutes=0 and "
            "train.max_steps > 0"
        )
    base = Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)})
    base = dataclasses.replace(base, run_dir=str(run_dir), resume=True)
    if corpus is not None:
        cache = str(Path(cfg.work_dir) / "cache")
        base.data = dataclasses.replace(base.data, source="text", text=corpus, cache_dir=cache)
    return base


def _launch(config_path: Path, events_path: Path, log_path: Path, slow_fsync: float) -> Life:
    cmd = [sys.executable, "-m", "nmt.tools.fault_drill", str(config_path), str(events_path), str(slow_fsync)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Life(proc, events_path, time.time())


def _temps(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(f"{TEMP_PREFIX}*"))


def _check_checkpoints(ckpt_dir: Path) -> tuple[int, list[str]]:
    """(files that load, errors of those that do not) for every ``*.pt`` in ``ckpt_dir``."""
    from nmt.checkpoint import load_checkpoint

    good, bad = 0, []
    for path in sorted(ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []:
        try:
            load_checkpoint(path)
            good += 1
        except NmtError as exc:
            bad.append(str(exc))
    return good, bad


def _mean_duration(events: list[Event], begin: str, end: str) -> float:
    """Mean seconds from each ``begin`` event to the ``end`` event with the same argument (the same step)."""
    begins = {e.arg: e.time for e in events if e.kind == begin}
    durations = [e.time - begins[e.arg] for e in events if e.kind == end and e.arg in begins]
    return sum(durations) / len(durations) if durations else 0.0


def _measure(life: Life) -> Timing:
    events = life.read()
    first = life.first("step")
    if first is None or life.first("updated") is None:
        raise NmtError(f"{life.events_path}: the reference run never trained; see its log beside it")
    return Timing(
        first.time - life.started,
        _mean_duration(events, "step", "updated"),
        _mean_duration(events, "validate", "validated"),
    )


def _step(life: Life) -> int:
    """The update in progress (or the last one started) in this life; 0 before the first."""
    return max((int(e.arg) for e in life.events if e.kind == "step"), default=0)


def _aim(
    life: Life, kill: Kill, rng: random.Random, timing: Timing, ckpt_dir: Path, slow_fsync: float
) -> bool:
    """Wait for the moment ``kill`` asks for and SIGKILL the process; False if it ended first."""
    deadline: float | None = None
    if kill.aimed == "startup":
        deadline = life.started + rng.uniform(0.0, timing.startup)
    while life.proc.poll() is None:
        life.read()
        now = time.time()
        last = life.events[-1] if life.events else None
        reached = _step(life) >= kill.target
        if deadline is not None or last is None or not reached:
            pass
        elif kill.aimed == "step":
            deadline = now + rng.uniform(0.0, timing.update)
        elif kill.aimed == "validation" and last.kind == "validate":
            deadline = last.time + rng.uniform(0.0, 0.8 * timing.validation)
        elif kill.aimed == "checkpoint" and last.kind == "save" and any(ckpt_dir.glob(f"{TEMP_PREFIX}*")):
            deadline = now + rng.uniform(0.0, slow_fsync / 2)
        if deadline is not None and now >= deadline:
            life.proc.kill()
            life.proc.wait()
            return True
        time.sleep(_POLL)
    return False


def _landed(life: Life) -> str:
    """Where the kill hit, from the last phase the process logged."""
    step = _step(life)
    last = life.events[-1] if life.events else None
    if last is None:
        return "startup (interpreter)"
    where = {
        "start": "startup (imports, data, model)",
        "resume": "resume (loading checkpoint)",
        "resumed": "startup (after resume)",
        "step": f"update {step}",
        "updated": f"after update {step}",
        "validate": f"validation at step {last.arg}",
        "validated": f"after validation at step {step}",
        "save": f"saving {last.arg}",
        "saved": f"after saving {last.arg}",
        "done": "after training",
    }
    return where.get(last.kind, last.kind)


def _resumed(life: Life) -> str:
    resumed = life.first("resumed")
    if resumed is None:
        return ""
    name, step = resumed.arg.split()
    return "fresh (no checkpoint yet)" if name == "-" else f"{name} @ step {step}"


def _compare(reference: Path, interrupted: Path) -> tuple[int, list[str]]:
    """Compare the weights of every reference checkpoint except ``last.prev`` with the interrupted run's."""
    import torch

    from nmt.checkpoint import load_checkpoint

    compared, differences = 0, []
    for path in sorted(reference.glob("*.pt")):
        if path.name == "last.prev.pt":
            continue
        other = interrupted / path.name
        if not other.is_file():
            differences.append(f"{path.name}: missing in the interrupted run")
            continue
        a, b = load_checkpoint(path)["model"], load_checkpoint(other)["model"]
        for name, tensor in a.items():
            compared += 1
            if name not in b or not torch.equal(tensor, b[name]):
                differences.append(f"{path.name}:{name}")
    return compared, differences


def _last_step(ckpt_dir: Path) -> int:
    from nmt.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(ckpt_dir / "last.pt")["state"]["step"])
    except NmtError:
        return -1


def _lives(
    cfg: FaultDrillConfig,
    config: Path,
    work: Path,
    timing: Timing,
    report: DrillReport,
    echo: Callable[[str], None],
) -> None:
    """Launch, aim and kill ``cfg.kills`` lives of the interrupted run, then let a last one finish."""
    rng = random.Random(cfg.kill_seed)
    run_dir, steps = work / "interrupted", load_config(config, Config).train.max_steps
    ckpt_dir = run_dir / CHECKPOINT_DIR
    waiting: list[Kill] = []  # killed, and no later life has resumed yet
    for number in range(1, cfg.kills + 2):
        name = f"life-{number:02d}.log"
        life = _launch(config, work / "events" / name, work / "logs" / name, cfg.slow_fsync)
        try:
            kill = None
            if number <= cfg.kills:
                first, end = (number - 1) * steps // cfg.kills, number * steps // cfg.kills
                kill = Kill(
                    number,
                    KILL_MODES[(number - 1) % len(KILL_MODES)],
                    rng.randint(first + 1, max(end, first + 1)),
                )
                if not _aim(life, kill, rng, timing, ckpt_dir, cfg.slow_fsync):
                    kill = None
            code = life.proc.wait()
        finally:
            if life.proc.poll() is None:  # the drill itself was interrupted: take the child along
                life.proc.kill()
        life.read()
        if started := life.first("step"):  # a resumed life starts faster than the reference (data cached)
            timing.startup = started.time - life.started
        if resumed := _resumed(life):
            for before in waiting:
                before.resumed, before.survived = resumed, before.checkpoints.endswith(" ok")
            waiting = []
        if kill is None:
            if code != 0:
                report.failure = f"life {number} exited with status {code}; see {work / 'logs' / name}"
            report.finished_early = number <= cfg.kills
            return
        kill.landed, kill.step, kill.temps = _landed(life), _step(life), _temps(run_dir)
        good, bad = _check_checkpoints(ckpt_dir)
        kill.checkpoints = f"{good} ok" if not bad else "; ".join(bad)
        report.kills.append(kill)
        waiting.append(kill)
        echo(f"kill {number}/{cfg.kills}: aimed at {kill.aim}, landed: {kill.landed}")


def run_drill(cfg: FaultDrillConfig, echo: Callable[[str], None] = print) -> DrillReport:
    """Run the drill in ``cfg.work_dir``: the reference run, the killed lives, the checks."""
    work = Path(cfg.work_dir)
    _fresh_work_dir(work)
    for name in ("events", "logs"):
        (work / name).mkdir()
    corpus = None
    if cfg.synthetic_pairs:
        corpus = write_synthetic_corpus(work / "corpus", cfg.synthetic_pairs, cfg.seed)
    configs = {name: work / f"{name}.yaml" for name in ("reference", "interrupted")}
    for name, path in configs.items():
        save_config(training_config(cfg, work / name, corpus), path)

    echo(f"reference run (uninterrupted) in {work / 'reference'} ...")
    ref = _launch(
        configs["reference"], work / "events" / "reference.log", work / "logs" / "reference.log", 0.0
    )
    try:
        code = ref.proc.wait()
    finally:
        if ref.proc.poll() is None:  # the drill itself was interrupted: take the child along
            ref.proc.kill()
    if code != 0:
        raise NmtError(f"the reference run failed; see {work / 'logs' / 'reference.log'}")
    report = DrillReport(kills=[], planned=cfg.kills)
    echo(f"{cfg.kills} kills and resumes in {work / 'interrupted'} ...")
    _lives(cfg, configs["interrupted"], work, _measure(ref), report, echo)

    ckpt_dir = work / "interrupted" / CHECKPOINT_DIR
    report.reference_step = _last_step(work / "reference" / CHECKPOINT_DIR)
    report.final_step = _last_step(ckpt_dir)
    good, bad = _check_checkpoints(ckpt_dir)
    report.checkpoints = "; ".join(bad) if bad else f"{good} checkpoints on disk, all load"
    report.temps_left = _temps(work / "interrupted")
    if not report.failure:
        report.compared, report.differences = _compare(work / "reference" / CHECKPOINT_DIR, ckpt_dir)
    return report


def format_report(report: DrillReport) -> str:
    """The kill table and the verdict."""
    head = (
        "#",
        "aimed at",
        "landed in",
        "step",
        "temp files at the kill",
        "checkpoints",
        "next life resumed from",
    )
    rows = [head] + [
        (
            str(k.number),
            k.aim,
            k.landed,
            str(k.step or "-"),
            ", ".join(k.temps) or "-",
            k.checkpoints,
            k.resumed or "never",
        )
        for k in report.kills
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"kills survived: {report.survived}/{report.planned}")
    if report.finished_early:
        lines.append(f"the run finished after {len(report.kills)} kills: raise train.max_steps for more")
    if report.failure:
        lines.append(f"FAILED: {report.failure}")
    lines.append(f"final step in last.pt: {report.final_step} (uninterrupted run: {report.reference_step})")
    lines.append(f"checkpoints: {report.checkpoints}")
    lines.append(f"temp files left: {', '.join(report.temps_left) or 'none'}")
    same = "yes" if report.compared and not report.differences else "NO"
    detail = f"{report.compared} tensors compared" + (
        f"; differ: {', '.join(report.differences[:5])}" if report.differences else ""
    )
    lines.append(f"weights bit-identical to the uninterrupted run: {same} ({detail})")
    return "\n".join(lines)


def fault_drill(cfg: FaultDrillConfig) -> DrillReport:
    """``scripts/fault_drill.py``: run the drill, print the table; NmtError if any check failed."""
    report = run_drill(cfg)
    print(format_report(report), flush=True)
    if not report.ok:
        raise NmtError(f"fault drill failed; the runs and their logs are in {cfg.work_dir}")
    return report


if __name__ == "__main__":
    run_instrumented(sys.argv[1], sys.argv[2], float(sys.argv[3]))
