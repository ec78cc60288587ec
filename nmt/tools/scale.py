"""Scale benchmark: wall time and peak memory of each data-preparation stage on a large corpus, then of the
length arrays, the sampler's first epoch and the start of training.

Preparation runs through :func:`nmt.data.prepare.prepare_data` itself, watched stage by stage (see
:mod:`nmt.data.stages`). Memory is read from ``/proc`` (Linux), per stage:

- ``peak_rss_mib``: this process's peak resident set during the stage, exact (the kernel's high-water mark,
  which ``getrusage(RUSAGE_SELF).ru_maxrss`` reports too, reset at each stage start through
  ``/proc/self/clear_refs``). It counts the pages of memory-mapped Arrow files
  the stage touched, which the kernel can drop at any time;
- ``peak_heap_mib``: the peak of its anonymous memory (``RssAnon``), what the process allocated itself; sampled;
- ``workers_peak_pss_mib`` / ``workers_peak_heap_mib``: the peaks of its child processes' memory together
  (``datasets.map`` workers under ``num_proc > 1``), sampled, as proportional set sizes (all pages, and
  anonymous pages only): forked workers share the parent's pages, and PSS counts a shared page once over the
  processes that share it, where summed resident sets would count it in each;
- ``maxrss_children_mib``: ``getrusage``'s peak of the largest child process finished so far (the same for
  every stage after the one whose workers set it: it only grows).

Training starts in a fresh process (``train_updates > 0``), as ``nmt train`` would, on the prepared caches:
the time from its start to its first update covers imports, the cached preparation, building the model and the
first batch. Run the same command twice: the second run reports which caches it reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from nmt.config import BigCorpusConfig, Config, ScaleConfig, load_config, save_config
from nmt.errors import NmtError

LENGTH_ARRAYS, SAMPLER_EPOCH, GENERATE = "length_arrays", "sampler_first_epoch", "generate_corpus"
TRAIN_INIT, TRAIN_FIRST_UPDATE = "trainer_init", "first_updates"
_STATUS_FIELDS = re.compile(r"^(VmRSS|VmHWM|RssAnon):\s+(\d+) kB", re.MULTILINE)
_COLUMNS = {  # the figures of a stage that the table shows, and their headings
    "seconds": "seconds",
    "peak_rss_mib": "peak RSS MiB",
    "peak_heap_mib": "heap MiB",
    "workers_peak_pss_mib": "workers PSS MiB",
    "workers_peak_heap_mib": "workers heap MiB",
}
_PEAKS = ("rss", "heap", "workers", "workers_heap")  # what MemoryWatch samples, in KiB
_PSS = re.compile(r"^(Pss|Pss_Anon):\s+(\d+) kB", re.MULTILINE)


def process_status(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` and ``RssAnon`` of a process in KiB (empty once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {name: int(kib) for name, kib in _STATUS_FIELDS.findall(text)}


def _children(pid: int | str) -> list[str]:
    pids: list[str] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += (task / "children").read_text().split()
    return pids


def _pss_kib(pid: str) -> dict[str, int]:
    """A process's proportional set size, all pages (``Pss``) and anonymous ones (``Pss_Anon``), in KiB."""
    try:
        return {name: int(kib) for name, kib in _PSS.findall(Path(f"/proc/{pid}/smaps_rollup").read_text())}
    except OSError:  # the process is gone
        return {}


def _workers_pss_kib() -> tuple[int, int]:
    """The summed proportional set sizes of this process's descendants: all pages, anonymous pages."""
    pss = anon = 0
    todo = _children("self")
    while todo:
        pid = todo.pop()
        sizes = _pss_kib(pid)
        pss, anon = pss + sizes.get("Pss", 0), anon + sizes.get("Pss_Anon", 0)
        todo += _children(pid)
    return pss, anon


def _reset_peak() -> bool:
    """Reset this process's high-water mark (VmHWM) to its current resident set; False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


@dataclass
class StageRecord:
    """One stage's wall time and memory peaks (see the module docstring for each figure)."""

    name: str
    seconds: float
    peak_rss_mib: float
    peak_heap_mib: float
    workers_peak_pss_mib: float
    workers_peak_heap_mib: float
    maxrss_children_mib: float


class MemoryWatch:
    """Times stages and records their memory peaks; a thread reads ``/proc`` every ``interval`` seconds.

    ``watch.stage(name)`` is a :data:`nmt.data.stages.StageHook`. Stages run one after another (not nested).
    """

    def __init__(self, interval: float) -> None:
        if not Path("/proc/self/status").is_file():
            raise NmtError("the scale benchmark reads memory figures from /proc: it runs on Linux only")
        self.interval = interval
        self.records: list[StageRecord] = []
        self._lock = threading.Lock()
        self._peaks = dict.fromkeys(_PEAKS, 0)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_done, name="memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        own = process_status()
        workers, workers_heap = _workers_pss_kib()
        now = {"rss": own.get("VmRSS", 0), "heap": own.get("RssAnon", 0), "workers": workers}
        with self._lock:
            for name, kib in {**now, "workers_heap": workers_heap}.items():
                self._peaks[name] = max(self._peaks[name], kib)

    def _sample_until_done(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Measure the stage run inside; its record is appended to ``records`` when it completes."""
        exact = _reset_peak()
        with self._lock:
            self._peaks = dict.fromkeys(_PEAKS, 0)
        self._sample()
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self._sample()
        with self._lock:
            peaks = dict(self._peaks)
        # the high-water mark sees what sampling misses (a C call holding the GIL starves the sampling thread)
        rss = max(peaks["rss"], process_status().get("VmHWM", 0) if exact else 0)
        self.records.append(
            StageRecord(
                name=name,
                seconds=seconds,
                peak_rss_mib=_mib(rss),
                peak_heap_mib=_mib(peaks["heap"]),
                workers_peak_pss_mib=_mib(peaks["workers"]),
                workers_peak_heap_mib=_mib(peaks["workers_heap"]),
                maxrss_children_mib=_mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
            )
        )


# ------------------------------------------------------------------------------------------------ corpus
def _generated_corpus(cfg: ScaleConfig, work: Path, watch: MemoryWatch) -> tuple[Path, Path, bool]:
    """The generated train and dev prefixes, written unless an earlier run left them; and whether one had."""
    from nmt.tools.big_corpus import output_paths, write_big_corpus

    wanted = [
        BigCorpusConfig(pairs=cfg.pairs, output=str(work / "corpus" / f"train-{cfg.pairs}"), gzip=cfg.gzip),
        BigCorpusConfig(
            pairs=cfg.dev_pairs, output=str(work / "corpus" / f"dev-{cfg.dev_pairs}"), gzip=cfg.gzip, seed=1
        ),
    ]
    reused = all(path.is_file() for corpus in wanted for path in output_paths(corpus).values())
    if not reused:
        with watch.stage(GENERATE):
            for corpus in wanted:
                write_big_corpus(corpus)
    return Path(wanted[0].output), Path(wanted[1].output), reused


def _with_corpus(cfg: ScaleConfig, work: Path, watch: MemoryWatch) -> tuple[Config, dict[str, Any]]:
    """``cfg.config`` reading the given corpus, or a generated one; and where the corpus came from."""
    text = cfg.config.data.text
    if text.train:
        return cfg.config, {"train": text.train, "dev": text.dev, "generated": False}
    train, dev, reused = _generated_corpus(cfg, work, watch)
    text = replace(text, train=str(train), dev=text.dev or str(dev))
    config = replace(cfg.config, data=replace(cfg.config.data, text=text))
    return config, {"train": text.train, "dev": text.dev, "generated": True, "reused": reused}


# ---------------------------------------------------------------------------------------------- training
def train_child(config_path: str, result_path: str, spawned_at: str, sample_seconds: str) -> None:
    """The training process: build the trainer on ``config_path`` and run its ``train.max_steps`` updates;
    write the times (seconds since ``spawned_at``, the parent's ``time.time()`` at the spawn) and peaks.
    The arguments are strings: they come from the command line."""
    from nmt.train.callbacks import TrainerCallbacks
    from nmt.train.trainer import Trainer

    imported = time.time()
    starts: list[float] = []
    updates: list[float] = []

    class UpdateTimes(TrainerCallbacks):
        def before_update(self, step: int) -> None:
            starts.append(time.time())

        def after_update(self, step: int) -> None:
            updates.append(time.time())

    cfg = load_config(config_path)
    with MemoryWatch(float(sample_seconds)) as watch:
        with watch.stage(TRAIN_INIT):
            trainer = Trainer(cfg, callbacks=UpdateTimes())
        with watch.stage(TRAIN_FIRST_UPDATE):
            trainer.fit()
    start = float(spawned_at)
    if not updates:
        raise NmtError("the training process made no update")
    result = {
        "seconds_to_imports": round(imported - start, 2),
        "seconds_to_first_batch": round(starts[0] - start, 2),  # data ready: the rest is the model's compute
        "seconds_to_first_update": round(updates[0] - start, 2),
        "update_seconds": [round(b - a, 2) for a, b in zip(updates, updates[1:])],
        "updates": len(updates),
        "caches": _caches(trainer.data.summary),
        "stages": [asdict(record) for record in watch.records],
    }
    Path(result_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _time_training(config: Config, cfg: ScaleConfig, work: Path) -> dict[str, Any]:
    """Run ``cfg.train_updates`` updates in a fresh process; its timings (see :func:`train_child`)."""
    train = replace(config.train, max_steps=cfg.train_updates, max_minutes=0.0)
    config_path, result_path, log_path = work / "train.yaml", work / "train.json", work / "train.log"
    save_config(replace(config, train=train, resume=False), config_path)
    result_path.unlink(missing_ok=True)
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    code = "import sys; from nmt.tools.scale import train_child; train_child(*sys.argv[1:])"
    with open(log_path, "w", encoding="utf-8") as log:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(config_path),
                str(result_path),
                repr(time.time()),
                str(cfg.sample_seconds),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if done.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(encoding="utf-8").strip().splitlines()[-5:]
        raise NmtError(
            f"the training process failed (exit {done.returncode}), see {log_path}: " + " | ".join(tail)
        )
    return json.loads(result_path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------- run
def _caches(summary: dict) -> dict[str, bool]:
    return {
        "corpus": summary["corpus"]["cache_hit"],
        "tokenizer": summary["tokenizer"]["reused"],
        "tokenized": summary["tokenized"]["cache_hit"],
    }


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def measure(cfg: ScaleConfig) -> dict[str, Any]:
    """Prepare (and optionally start training on) the corpus, measuring each stage; the JSON-ready result."""
    from nmt.data.batching import TokenBucketSampler
    from nmt.data.prepare import prepare_data
    from nmt.train.trainer import require_dev_set

    work = Path(cfg.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    machine_before = _machine()
    with MemoryWatch(cfg.sample_seconds) as watch:
        config, corpus = _with_corpus(cfg, work, watch)
        if cfg.train_updates:
            require_dev_set(config)  # before hours of preparation, not after
        started = time.perf_counter()
        prepared = prepare_data(config, Path(config.run_dir), watch.stage)
        prepare_seconds = time.perf_counter() - started
        with watch.stage(LENGTH_ARRAYS):
            src_len, tgt_len = prepared.lengths("train")
        with watch.stage(SAMPLER_EPOCH):
            sampler = TokenBucketSampler(src_len, tgt_len, config.train.max_tokens, seed=config.seed)
            batches = sum(1 for _ in sampler)
    summary = prepared.summary
    del prepared, sampler, src_len, tgt_len  # the training process gets the memory to itself
    result = {
        "corpus": corpus,
        "pairs": {name: split["pairs"] for name, split in summary["splits"].items()},  # after cleaning
        "num_proc": config.data.num_proc,
        "input_sentence_size": config.tokenizer.input_sentence_size,
        "caches": _caches(summary),
        "prepare_seconds": round(prepare_seconds, 2),
        "sampler_batches": batches,
        "stages": [asdict(record) for record in watch.records],
        "peak_rss_mib": max(record.peak_rss_mib for record in watch.records),
        "machine": {"before": machine_before, "after": _machine()},
        "training": None,
    }
    output = Path(cfg.output).expanduser() if cfg.output else work / "scale.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")  # kept if training fails
    if cfg.train_updates:
        result["training"] = _time_training(config, cfg, work)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["output"] = str(output)
    return result


def format_result(result: dict[str, Any]) -> str:
    """The stages as a table, then the caches, the totals and the training start."""
    rows = [["stage", *_COLUMNS.values()]]
    rows += [[stage["name"], *(f"{stage[key]:,.1f}" for key in _COLUMNS)] for stage in result["stages"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    table.insert(1, "-" * len(table[0]))
    caches = result["caches"]
    lines = [
        f"{result['pairs']['train']:,} training pairs, num_proc {result['num_proc']}, "
        f"tokenizer sample {result['input_sentence_size']:,} sentences",
        *table,
        f"preparation: {result['prepare_seconds']:,.1f} s; caches reused: "
        + ", ".join(f"{name} {'yes' if hit else 'no'}" for name, hit in caches.items()),
        f"sampler: {result['sampler_batches']:,} batches in the first epoch; peak RSS {result['peak_rss_mib']:,.0f} MiB",
    ]
    training = result["training"]
    if training:
        lines.append(
            f"training: first update {training['seconds_to_first_update']:.1f} s after the process started "
            f"(imports {training['seconds_to_imports']:.1f} s, first batch at {training['seconds_to_first_batch']:.1f}"
            f" s), {training['updates']} updates, peak RSS "
            f"{max(stage['peak_rss_mib'] for stage in training['stages']):,.0f} MiB"
        )
    lines.append(f"details: {result['output']}")
    return "\n".join(lines)


def scale_bench(cfg: ScaleConfig) -> dict[str, Any]:
    """``scripts/scale_bench.py``: measure, print the table, write the JSON; returns the result."""
    result = measure(cfg)
    print(format_result(result), flush=True)
    return result
