"""Data-parallel training over several processes: ``torchrun`` starts one copy of the training script per
device, each joins one process group, and DistributedDataParallel averages their gradients.

The trainer keeps every rank in lockstep: all ranks run the same control flow (same number of updates per
epoch, same stop decisions) and only rank 0 touches the file system. The helpers here are the few collectives
this needs; without a process group (a plain ``python scripts/train.py``) each of them is the identity, so a
single process behaves exactly as if this module did not exist. How the loss is normalised so that N ranks
equal one large batch is written next to the code, in ``Trainer._update``.

Failure model: a rank that crashes closes its connections, and the others' next collective fails at once; a
rank that hangs makes the others' next collective fail after ``train.ddp_timeout_minutes``. Either way
:func:`process_group` turns the failure into an :class:`NmtError` that says so, instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from nmt.device import resolve_device
from nmt.errors import NmtError

T = TypeVar("T")
_COMM_FAILURE_HINTS = ("connection", "closed by peer", "timed out", "timeout", "broken pipe", "nccl", "gloo")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and metrics."""
        return self.rank == 0


def ranks_from_env() -> Ranks:
    """The ranks that ``torchrun`` announces in RANK / WORLD_SIZE / LOCAL_RANK (one process without them)."""
    try:
        return Ranks(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as exc:
        raise NmtError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them): {exc}"
        ) from exc


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current() -> Ranks:
    """This process's ranks in the active process group (rank 0 of 1 when there is none)."""
    if not is_distributed():
        return Ranks()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Ranks(dist.get_rank(), dist.get_world_size(), local)


def rank_device(name: str, ranks: Ranks) -> torch.device:
    """The device of one rank: ``cuda:<local_rank>`` when ``name`` resolves to CUDA under several processes."""
    device = resolve_device(name)
    if ranks.world_size == 1:
        return device
    if device.type == "mps":
        raise NmtError(f"device={name!r}: multi-process training does not support MPS; use device=cpu")
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise NmtError(
                f"LOCAL_RANK={ranks.local_rank}, but this node has {torch.cuda.device_count()} CUDA device(s): "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", ranks.local_rank)
    return device


def _is_comm_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return any(hint in text for hint in _COMM_FAILURE_HINTS)


@contextlib.contextmanager
def process_group(device: str, timeout_minutes: float) -> Iterator[Ranks]:
    """Join the job ``torchrun`` describes in the environment for the duration of the block.

    Backend: NCCL when the rank's device is CUDA, gloo on CPU. ``timeout_minutes`` bounds every collective,
    so a hung rank ends the others' waits (it must exceed the longest validation, which rank 0 runs alone).
    With WORLD_SIZE unset or 1 no process group is created.
    """
    ranks = ranks_from_env()
    if ranks.world_size == 1:
        yield ranks
        return
    device = rank_device(device, ranks)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    except (RuntimeError, ValueError) as exc:
        raise NmtError(
            f"rank {ranks.rank} of {ranks.world_size}: could not join the process group at {where} ({exc}); "
            "start the job with torchrun, and check --rdzv_endpoint / MASTER_ADDR and MASTER_PORT"
        ) from exc
    try:
        yield ranks
        dist.barrier()  # every rank returns only when all have finished
    except RuntimeError as exc:
        if not _is_comm_failure(exc):
            raise
        raise NmtError(
            f"rank {ranks.rank} of {ranks.world_size}: lost contact with the other ranks: another rank died "
            f"or stopped answering for train.ddp_timeout_minutes={timeout_minutes:g}; see its log. "
            f"Restart with resume=true to continue from the last checkpoint. ({exc})"
        ) from exc
    finally:
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_numbers(values: Sequence[float], op: str = "sum") -> list[float]:
    """Element-wise ``sum`` or ``max`` of ``values`` over all ranks (float64); the values themselves alone."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.tolist()


def max_over_ranks(value: int) -> int:
    """The largest of one integer over all ranks (e.g. a stop flag that any rank may raise)."""
    return int(reduce_numbers([value], op="max")[0])


def _from_main(fn: Callable[[], T], share: bool) -> T | None:
    """Run ``fn`` on rank 0; the others wait for it and get its result (``share``) or None; a failure on
    rank 0 becomes an :class:`NmtError` on the others instead of a wait that never ends."""
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:
            dist.broadcast_object_list([("error", f"{type(exc).__name__}: {exc}")], src=0)
            raise
        dist.broadcast_object_list([("ok", result if share else None)], src=0)
        return result
    payload: list[Any] = [None]
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise NmtError(f"rank {dist.get_rank()}: stopping because rank 0 failed: {value}")
    return value


def main_only(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 alone; the other ranks wait and receive its (picklable) result."""
    if not is_distributed():
        return fn()
    return _from_main(fn, share=True)  # type: ignore[return-value]


def main_first(main: Callable[[], T], others: Callable[[], T]) -> T:
    """Rank 0 runs ``main``; once it has succeeded, every other rank runs ``others`` (e.g. to read what rank 0
    wrote, or repaired). Without a process group: ``main()``."""
    if not is_distributed():
        return main()
    result = _from_main(main, share=False)
    return result if dist.get_rank() == 0 else others()  # type: ignore[return-value]


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
