"""Micro-batching: requests that arrive close together share one model call.

Each request becomes a job in a FIFO queue. One collector task (on the event loop) takes the oldest job, then
waits until ``max_wait_s`` after that job *arrived* for more jobs with the same search settings, until the
batch holds ``max_tokens`` source tokens; the batch then runs on the single model thread, off the event loop,
and its results are handed back through each job's asyncio future. Under load, jobs pile up while the model
is busy, so the next batch is taken at once and large: throughput grows with the number of clients; an idle
server adds at most ``max_wait_s`` of latency. A job that is too big for ``max_tokens`` alone runs alone.

Jobs with other search settings stay queued in order and start the next batch, so no setting starves.
A job whose request gave up (timeout, client gone) is skipped; results nobody waits for are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S")  # search settings: compared with ==, compatible when equal
R = TypeVar("R")  # one line's result


class QueueFull(Exception):
    """The queue already holds ``max_queue_lines`` lines: the client should retry later."""


class BatcherClosed(Exception):
    """The batcher was stopped (server shutting down) before the job ran."""


@dataclass
class _Job(Generic[S, R]):
    lines: list[str]
    settings: S
    tokens: int
    future: asyncio.Future[list[R]]
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[S, R]):
    """Gather concurrent ``submit`` calls into batches for ``run(lines, settings) -> results`` (one per line).

    ``count_tokens(line)`` sizes a line for the ``max_tokens`` bound. ``enabled=False`` runs every job alone,
    in arrival order, through the same thread (the no-batching baseline). Start with :meth:`start` inside the
    event loop that will call :meth:`submit`; stop with :meth:`stop`.
    """

    def __init__(
        self,
        run: Callable[[list[str], S], Sequence[R]],
        count_tokens: Callable[[str], int],
        max_tokens: int,
        max_wait_s: float,
        max_queue_lines: int,
        enabled: bool = True,
    ) -> None:
        self._run = run
        self._count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.max_queue_lines = max_queue_lines
        self.enabled = enabled
        self._queue: deque[_Job[S, R]] = deque()
        self._queued_lines = 0
        self._arrival: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches_run = 0  # model calls so far (for /health and the tests)

    @property
    def queued_lines(self) -> int:
        return self._queued_lines

    def start(self) -> None:
        """Create the collector task and the model thread (call from the running event loop)."""
        self._arrival = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmt-model")
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting, fail the jobs still queued with :class:`BatcherClosed`, let the model thread end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail(self._queue, BatcherClosed("the server is shutting down"))
        self._queue.clear()
        self._queued_lines = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, lines: list[str], settings: S) -> list[R]:
        """Queue ``lines`` and wait for their results (one per line, in order).

        Raises :class:`QueueFull` at once when the queue has no room, :class:`BatcherClosed` when not running.
        Cancelling the caller (e.g. ``asyncio.wait_for`` timing out) withdraws the job if it has not run yet.
        """
        if self._task is None or self._arrival is None:
            raise BatcherClosed("the batcher is not running")
        if self._queued_lines + len(lines) > self.max_queue_lines:
            raise QueueFull(
                f"{self._queued_lines} lines are waiting for the model (limit {self.max_queue_lines})"
            )
        tokens = sum(self._count_tokens(line) for line in lines)
        job: _Job[S, R] = _Job(lines, settings, tokens, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_lines += len(lines)
        self._arrival.set()
        return await job.future

    def _drop_abandoned(self) -> None:
        """Forget queued jobs whose caller stopped waiting."""
        kept = deque(job for job in self._queue if not job.future.done())
        for job in self._queue:
            if job.future.done():
                self._queued_lines -= len(job.lines)
        self._queue = kept

    def _take_batch(self, first: _Job[S, R]) -> list[_Job[S, R]]:
        """Remove and return ``first`` (the queue's head) plus the oldest queued jobs with its settings that
        fit within ``max_tokens``."""
        batch, tokens, rest = [], 0, deque()
        for job in self._queue:
            fits = self.enabled and job.settings == first.settings and tokens + job.tokens <= self.max_tokens
            if job is first or (fits and not job.future.done()):
                batch.append(job)
                tokens += job.tokens
            else:
                rest.append(job)
        self._queue = rest
        return batch

    def _batch_is_full(self, first: _Job[S, R]) -> bool:
        tokens = 0
        for job in self._queue:
            if job is first or (job.settings == first.settings and not job.future.done()):
                tokens += job.tokens
                if tokens >= self.max_tokens:
                    return True
        return False

    async def _wait_for_company(self, first: _Job[S, R]) -> None:
        """Sleep until the window of ``first`` closes, waking up on each arrival to see if the batch is full."""
        assert self._arrival is not None
        while not self._batch_is_full(first):
            remaining = first.arrived + self.max_wait_s - time.monotonic()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _collect(self) -> None:
        assert self._arrival is not None
        while True:
            self._drop_abandoned()
            if not self._queue:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            first = self._queue[0]  # stays queued while it waits, so stop() can fail it
            if self.enabled and self.max_wait_s > 0:
                await self._wait_for_company(first)
            taken = self._take_batch(first)
            self._queued_lines -= sum(len(job.lines) for job in taken)
            batch = [job for job in taken if not job.future.done()]
            if batch:
                await self._run_batch(batch, first.settings)

    async def _run_batch(self, batch: list[_Job[S, R]], settings: S) -> None:
        """Translate the batch on the model thread and resolve each job's future with its share."""
        lines = [line for job in batch for line in job.lines]
        self.batches_run += 1
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, lines, settings
            )
        except asyncio.CancelledError:
            self._fail(batch, BatcherClosed("the server is shutting down"))
            raise
        except Exception as exc:  # the model failed: every waiting request hears why
            self._fail(batch, exc)
            return
        start = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(list(results[start : start + len(job.lines)]))
            start += len(job.lines)

    @staticmethod
    def _fail(jobs: Sequence[_Job[S, R]], exc: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
