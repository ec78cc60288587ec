"""Multi-process training (DDP) on CPU: two gloo ranks on the loopback interface, one torch thread each.

Each scenario runs in two freshly spawned processes that find each other through the same environment
variables torchrun sets (MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK); the torchrun entry point itself
is covered by one end-to-end run of scripts/train.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from corpus import digit_cli_overrides, digit_config

from nmt.checkpoint import load_checkpoint
from nmt.config import Config
from nmt.errors import NmtError
from nmt.train import distributed
from nmt.train import trainer as trainer_module
from nmt.train.trainer import Trainer, train

pytestmark = pytest.mark.slow  # subprocesses and end-to-end runs: minutes, not seconds

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
PARAM_ATOL = 1e-5  # 2 ranks x half batch vs 1 rank x full batch: only float summation order differs


# ------------------------------------------------------------------------------------------- harness
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, scenario, payload, out_dir: str) -> None:
    """Child process: become rank ``rank`` exactly as torchrun would make it, run ``scenario``, save its result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        result = scenario(rank, payload)
    except BaseException:
        Path(out_dir, f"error{rank}.txt").write_text(traceback.format_exc())
        raise
    torch.save(result, Path(out_dir, f"rank{rank}.pt"))


def run_ranks(
    scenario, payload, out_dir: Path, timeout: float = 60.0, rank0_decides: bool = False
) -> tuple[list, list[int | None]]:
    """Run ``scenario(rank, payload)`` in WORLD spawned processes; returns (results, exit codes).
    ``rank0_decides``: kill the other ranks as soon as rank 0 has exited."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(rank, port, scenario, payload, str(out_dir)))
        for rank in range(WORLD)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout
    for proc in procs[:1] if rank0_decides else procs:
        proc.join(max(deadline - time.monotonic(), 0.1))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    results = [
        torch.load(out_dir / f"rank{r}.pt", weights_only=False)
        if (out_dir / f"rank{r}.pt").exists()
        else None
        for r in range(WORLD)
    ]
    errors = [(out_dir / f"error{r}.txt") for r in range(WORLD)]
    for path in errors:
        if path.exists():
            print(path.read_text(), file=sys.stderr)
    return results, [proc.exitcode for proc in procs]


def run_ok(scenario, payload, out_dir: Path, timeout: float = 60.0) -> list:
    results, codes = run_ranks(scenario, payload, out_dir, timeout)
    assert codes == [0] * WORLD, f"exit codes {codes} (negative: killed at the {timeout:.0f} s limit)"
    return results


def config(root: Path, name: str, **train_overrides) -> Config:
    """The digit config, with a corpus and cache shared by every run under ``root``."""
    cfg = digit_config(root, **train_overrides)
    cfg.run_dir = str(root / name)
    return cfg


def weights(run_dir: str, name: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run_dir) / "checkpoints" / f"{name}.pt")["model"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# --------------------------------------------------------------------------------------- scenarios
def _forbid_writes(rank: int) -> None:
    """Make every file-writing entry point of the trainer fail on this rank."""

    def forbidden(*_args, **_kwargs):
        raise AssertionError(f"rank {rank} tried to write")

    trainer_module.save_checkpoint = forbidden
    trainer_module.write_model_config = forbidden
    trainer_module.prepare_data = forbidden
    trainer_module.Monitor = forbidden


def _one_update(rank: int, payload: dict) -> dict:
    """Fixed batches: rank r takes global batches r, r+2, ... of one update (accumulated under no_sync)."""
    out: dict = {"params": []}
    for plan in payload["plans"]:
        trainer = Trainer(payload["unit"])
        assert trainer._update([trainer._batch(b) for b in plan[rank::WORLD]]) is not None
        out["params"].append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    sampler = trainer.sampler
    out["epochs"] = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        out["epochs"].append(list(sampler))
    sampler.set_epoch(2)
    for _, _ in zip(range(3), sampler):
        pass
    out["sampler_state"] = sampler.state_dict()
    return out


def _interrupt_and_resume(rank: int, payload: dict) -> dict:
    """Uninterrupted run; a run interrupted by SIGINT to rank 1 alone; then that run resumed."""
    whole, part = payload["whole"], payload["part"]
    out = {"whole": Trainer(whole).fit()}
    original, calls = Trainer._update, []

    def update_then_signal(self, batches):
        result = original(self, batches)
        calls.append(1)
        if rank == 1 and len(calls) == payload["interrupt_after"]:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    Trainer._update = update_then_signal
    interrupted = Trainer(part)
    out["part"] = interrupted.fit()
    out["sampler_state"] = interrupted.sampler.state_dict()
    Trainer._update = original
    torch.manual_seed(1000 + rank)  # as in a fresh process: only the checkpoint may restore the RNG
    part.resume = True
    resumed = Trainer(part)
    out["resumed_at"] = resumed.state.step
    out["resumed"] = resumed.fit()
    return out


def _healthy_ranks(rank: int, payload: dict) -> dict:
    """Everything that needs two healthy ranks, in one launch (process start-up is the slow part)."""
    if rank:
        _forbid_writes(rank)  # for the whole launch: only rank 0 may write
    started = time.monotonic()
    out = {"train": train(payload["train"])}  # as scripts/train.py calls it: joins and leaves a group
    out["train_seconds"] = time.monotonic() - started
    os.environ["MASTER_PORT"] = str(payload["port2"])
    with distributed.process_group("cpu", 1.0):
        out["unit"] = _one_update(rank, payload)
        out["resume"] = _interrupt_and_resume(rank, payload)
    return out


def _rank1_dies(rank: int, payload: dict) -> dict:
    if rank == 1:
        original, calls = Trainer._update, []

        def update_then_die(self, batches):
            calls.append(1)
            if len(calls) == 3:
                Path(payload["death_file"]).write_text(str(time.time()))
                os._exit(3)
            return original(self, batches)

        Trainer._update = update_then_die
    try:
        train(payload["cfg"])
    except NmtError as exc:
        return {"error": str(exc), "at": time.time()}
    return {"error": None}


def _rank1_hangs(rank: int, payload: dict) -> dict:
    started = time.monotonic()
    try:
        with distributed.process_group("cpu", payload["timeout_minutes"]):
            distributed.max_over_ranks(0)  # both ranks are up
            if rank == 1:
                time.sleep(payload["silent_seconds"])  # alive but silent
                os._exit(0)
            started = time.monotonic()
            distributed.max_over_ranks(1)
    except NmtError as exc:
        return {"seconds": time.monotonic() - started, "error": str(exc)}
    return {"seconds": None}


# ------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def healthy(root) -> dict:
    """Configs, and what each of the two ranks returned from :func:`_healthy_ranks`."""
    cfgs = {
        # 240 tokens: 10 batches per epoch, so 2 ranks and 1 rank x accumulate 2 pair them up alike
        "train": config(root, "ddp", max_tokens=240, max_steps=8, validate_every=3),
        "single": config(root, "single", max_tokens=240, max_steps=8, validate_every=3, accumulate=2),
        "unit": config(root, "unit", max_tokens=100, warmup_steps=0),  # the full lr: one update moves weights
        "whole": config(root, "whole", max_steps=10),  # dropout on: each rank's RNG must be restored
        "part": config(root, "part", max_steps=10),
    }
    for name in ("train", "single", "unit"):
        cfgs[name].model.dropout = 0.0  # the compared paths must compute the same function
    sampler = Trainer(cfgs["unit"]).sampler
    plan = [list(b) for _, b in zip(range(4), iter(sampler))]
    plans = [plan[:2], plan]  # one batch per rank; then two per rank (accumulation under no_sync)
    payload = {**cfgs, "plans": plans, "interrupt_after": 5, "port2": free_port()}
    started = time.monotonic()
    results = run_ok(_healthy_ranks, payload, root / "healthy", timeout=150)
    print(f"\nlaunch of 2 ranks, 5 trainings: {time.monotonic() - started:.1f} s")
    return {"cfgs": cfgs, "plans": plans, "ranks": results}


def test_one_update_two_ranks_equals_one_rank_full_batch(healthy):
    cfg = healthy["cfgs"]["unit"]
    for i, plan in enumerate(healthy["plans"]):
        single = Trainer(cfg)
        before = {k: v.clone() for k, v in single.model.state_dict().items()}
        single._update([single._batch([i for b in plan for i in b])])  # one rank, the full batch
        want = single.model.state_dict()
        got = [r["unit"]["params"][i] for r in healthy["ranks"]]
        assert all(torch.equal(got[0][k], got[1][k]) for k in want)  # the ranks stay identical
        diff = max_abs_diff(got[0], want)
        print(f"\nmax |param(2 ranks) - param(1 rank, full batch)| after one update, plan {i}: {diff:.2e}")
        assert diff <= PARAM_ATOL
        assert max_abs_diff(want, before) > 1e-4  # the update did move the weights


def test_shards_cover_every_example_once_per_epoch(healthy):
    n = len(Trainer(healthy["cfgs"]["unit"]).train_split)
    ranks = [r["unit"] for r in healthy["ranks"]]
    for epoch in (0, 1):
        shards = [r["epochs"][epoch] for r in ranks]
        assert len(shards[0]) == len(shards[1])  # same number of updates on both ranks
        seen = Counter(i for shard in shards for batch in shard for i in batch)
        assert sorted(seen) == list(range(n)) and set(seen.values()) == {1}
    assert ranks[0]["sampler_state"] == ranks[1]["sampler_state"] == {"epoch": 2, "position": 3}


def test_ddp_training_equals_one_process_with_accumulation(healthy):
    """2 ranks x 1 batch per update == 1 rank x 2 accumulated batches (the same global batches), end to end:
    8 updates over an epoch boundary, with validations (on rank 0) and the default (budget) schedule."""
    single = Trainer(healthy["cfgs"]["single"])
    for epoch in (0, 1):  # the global batch lists must pair up the same way in both runs
        single.sampler.set_epoch(epoch)
        assert len(single.sampler) % WORLD == 0
    single.sampler.set_epoch(0)
    expected = single.fit()

    runs = [r["train"] for r in healthy["ranks"]]
    print(f"\n2-rank train(): {healthy['ranks'][0]['train_seconds']:.1f} s")
    assert runs[0]["processes"] == WORLD and runs[0]["steps"] == 8
    assert [v["step"] for v in runs[0]["validations"]] == [3, 6, 8]
    assert runs[0]["validations"] == runs[1]["validations"]  # rank 0's records reached rank 1
    assert runs[0]["target_tokens"] == expected["target_tokens"]
    for a, b in zip(runs[0]["validations"], expected["validations"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    diff = max_abs_diff(weights(healthy["cfgs"]["train"].run_dir), weights(single.cfg.run_dir))
    print(f"max |param(2 ranks) - param(1 rank, accumulate 2)| after 8 updates: {diff:.2e}")
    assert diff <= PARAM_ATOL
    assert json.loads((Path(healthy["cfgs"]["train"].run_dir) / "metrics.json").read_text())["processes"] == 2


def test_signal_to_one_rank_stops_all_and_resume_equals_uninterrupted(healthy):
    ranks = [r["resume"] for r in healthy["ranks"]]
    for r in ranks:
        assert r["part"]["steps"] == 5 and r["part"]["stop_reason"] == "stopped by signal SIGINT"
        assert r["resumed_at"] == 5 and r["resumed"]["steps"] == 10
    assert ranks[0]["sampler_state"] == ranks[1]["sampler_state"]  # same epoch and position on each rank
    cfgs = healthy["cfgs"]
    diff = max_abs_diff(weights(cfgs["whole"].run_dir), weights(cfgs["part"].run_dir))
    print(f"\nmax |param(uninterrupted) - param(interrupted + resumed)|, 2 ranks, dropout 0.1: {diff:.2e}")
    assert diff <= 1e-6


def test_a_two_process_checkpoint_resumes_in_one_process(healthy):
    cfg = copy.deepcopy(healthy["cfgs"]["whole"])
    cfg.resume = True
    saved = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.pt")["sampler"]  # per rank
    resumed = Trainer(cfg)
    assert resumed.state.step == 10 and saved["position"] > 0
    assert resumed.sampler.state_dict() == {"epoch": saved["epoch"], "position": WORLD * saved["position"]}


def test_a_rank_that_dies_ends_the_others_with_a_clear_error(root, tmp_path):
    cfg = config(root, "dies", max_steps=50, ddp_timeout_minutes=5.0)
    death_file = tmp_path / "death"
    results, codes = run_ranks(_rank1_dies, {"cfg": cfg, "death_file": str(death_file)}, tmp_path)
    assert codes == [0, 3]
    error = results[0]["error"]
    assert "rank 0 of 2: lost contact with the other ranks" in error and "resume=true" in error
    assert results[0]["at"] - float(death_file.read_text()) < 20  # far below the 5-minute timeout


def test_a_rank_that_hangs_times_out_the_others(tmp_path):
    payload = {"timeout_minutes": 0.05, "silent_seconds": 60}
    results, _ = run_ranks(_rank1_hangs, payload, tmp_path, timeout=40, rank0_decides=True)
    assert results[0]["seconds"] is not None and 2.5 <= results[0]["seconds"] < 10  # the 3 s timeout
    assert "lost contact" in results[0]["error"] and "train.ddp_timeout_minutes=0.05" in results[0]["error"]


def test_torchrun_runs_scripts_train(root, tmp_path):
    corpus = Path(config(root, "unused").data.text.train).parent  # writes the corpus
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={WORLD}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        "scripts/train.py",
        *digit_cli_overrides(str(corpus), root / "cache"),
        "train.max_steps=4",
        "train.validate_every=4",
        "train.progress=false",
        f"run_dir={tmp_path / 'run'}",
        "threads=1",
        "device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == WORLD and metrics["steps"] == 4
    assert result.stderr.count("effective batch: up to 200 tokens x accumulate 1 x 2 process(es)") == 1


# ------------------------------------------------------------------------------------ two nodes, one host
def _launch_nodes(commands: list[list[str]], logs: list[Path], timeout: float) -> list[int | None]:
    """Start one launcher per command, each in its own process group, and wait for all of them, ``timeout``
    seconds at most in all. Once one fails, or at the deadline, every group is killed (launcher and workers),
    so a rendezvous that never completes cannot hang the suite or leave processes behind."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen] = []
    try:
        for command, log in zip(commands, logs):
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [proc.poll() for proc in procs]
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):  # the group may be gone already
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return [proc.returncode for proc in procs]


def test_two_torchrun_nodes_equal_one_process_with_the_same_global_batch(root, tmp_path):
    """``torchrun --nnodes=2 --node-rank=0|1`` twice on this host (static rendezvous on 127.0.0.1, gloo) runs
    scripts/train.py as a two-node job; one plain process with accumulate=2 sees the same global batches (240
    tokens: 10 batches per epoch pair up alike) and must end with the same weights and validation losses."""
    corpus = Path(config(root, "unused").data.text.train).parent  # writes the corpus
    common = [
        o for o in digit_cli_overrides(str(corpus), root / "cache") if not o.startswith("train.max_tokens")
    ]
    common += ["train.max_tokens=240", "train.max_steps=8", "train.validate_every=3", "model.dropout=0.0"]
    common += ["train.progress=false", "threads=1", "device=cpu"]
    port = free_port()
    launchers = [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={node}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            "scripts/train.py",
            *common,
            f"run_dir={tmp_path / 'two_nodes'}",
        ]
        for node in (0, 1)
    ]
    logs = [tmp_path / f"node{node}.log" for node in (0, 1)]
    started = time.monotonic()
    codes = _launch_nodes(launchers, logs, timeout=240)
    print(f"\ntwo torchrun nodes, 8 updates: {time.monotonic() - started:.1f} s")
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)
    assert codes == [0, 0], (
        f"exit codes {codes} (-9: killed at the 240 s limit or after the other failed)\n{tails}"
    )

    single = [
        sys.executable,
        "scripts/train.py",
        *common,
        "train.accumulate=2",
        f"run_dir={tmp_path / 'single'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(single, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    two, one = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("two_nodes", "single")
    )
    assert two["processes"] == WORLD and one["processes"] == 1 and two["steps"] == one["steps"] == 8
    assert "effective batch: up to 240 tokens x accumulate 1 x 2 process(es)" in logs[0].read_text()
    assert [v["step"] for v in two["validations"]] == [v["step"] for v in one["validations"]] == [3, 6, 8]
    for a, b in zip(two["validations"], one["validations"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    diff = max_abs_diff(weights(str(tmp_path / "two_nodes")), weights(str(tmp_path / "single")))
    print(f"max |param(2 nodes x 1 process) - param(1 process, accumulate 2)| after 8 updates: {diff:.2e}")
    assert diff <= PARAM_ATOL
