"""A bounded load test of a running server: N concurrent clients POST /translate on loopback.

Each run stops by itself after ``max_requests`` requests in all or ``duration_s`` seconds, whichever comes
first, and reports requests/s, latency percentiles and errors (a non-200 answer or a failed connection).
Only loopback URLs are accepted: this is for measuring a server on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from nmt.errors import NmtError
from nmt.serve.server import is_loopback

DEFAULT_SENTENCES = [
    "three one four one five",
    "nine two six",
    "five three five eight nine seven",
    "nine three two",
    "three eight four six two six",
    "four three three eight",
    "three two seven nine five",
    "zero two eight",
]


@dataclass
class LoadResult:
    """What one load run measured."""

    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or "connection") -> count

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.requests - self.statuses.get(200, 0)

    def summary(self) -> dict[str, float]:
        """``clients, requests, errors, rps`` (successful requests per second), ``p50/p95/p99`` latency (ms)."""
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.full(1, np.nan)
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "rps": len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0,
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
        }


def check_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``url``; NmtError unless it is plain http on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise NmtError(f"url={url!r}: expected http://127.0.0.1:PORT")
    if not is_loopback(parts.hostname):
        raise NmtError(f"url={url!r}: the load test only targets a server on this machine (127.0.0.1, ::1)")
    return parts.hostname, parts.port or 80


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for JSON POSTs.

    A plain asyncio stream rather than an HTTP client library: at 32 concurrent clients a full client costs
    more CPU than the server it measures, on the same cores.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, payload: dict, timeout_s: float) -> int:
        """Send ``payload`` as JSON; the response's status code (its body is read and dropped)."""
        return await asyncio.wait_for(self._post(path, json.dumps(payload).encode("utf-8")), timeout_s)

    async def _post(self, path: str, body: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
            + body
        )
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(":", 1) for line in head[1:] if ":" in line)
        if "content-length" not in headers:
            raise ConnectionError("response without Content-Length")
        await reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").strip() == "close":
            self.close()
        return int(head[0].split()[1])

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def run_load(
    url: str,
    clients: int,
    max_requests: int,
    duration_s: float,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    lines_per_request: int = 1,
    beam_size: int | None = None,
    timeout_s: float = 60.0,
) -> LoadResult:
    """Run ``clients`` concurrent request loops (one connection each) against ``url`` until ``max_requests``
    were sent in all or ``duration_s`` has passed; request ``k`` sends ``lines_per_request`` sentences
    starting at sentence ``k``."""
    host, port = check_url(url)
    path = urlsplit(url).path.rstrip("/") + "/translate"
    if clients < 1 or max_requests < 1 or duration_s <= 0 or lines_per_request < 1 or not sentences:
        raise NmtError("clients, max_requests, lines_per_request and duration_s must be positive")
    result = LoadResult(clients=clients, seconds=0.0)
    issued = 0
    extra = {} if beam_size is None else {"beam_size": beam_size}
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker() -> None:
        nonlocal issued
        connection = _Connection(host, port)
        try:
            while issued < max_requests and time.perf_counter() < deadline:
                k = issued
                issued += 1
                lines = [sentences[(k + i) % len(sentences)] for i in range(lines_per_request)]
                sent = time.perf_counter()
                try:
                    status = await connection.post(path, {"lines": lines, **extra}, timeout_s)
                except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                    connection.close()
                    result.statuses["connection"] += 1
                    continue
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    result.seconds = time.perf_counter() - start
    return result


def load_test(
    url: str,
    clients: Sequence[int],
    max_requests: int,
    duration_s: float,
    input_path: str | None = None,
    lines_per_request: int = 1,
    beam_size: int | None = None,
    label: str | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """One :func:`run_load` per client count (sentences from ``input_path``, one per line, or the digit
    defaults); rows of :meth:`LoadResult.summary`, with a first ``run`` column when ``label`` is given."""
    sentences = DEFAULT_SENTENCES
    if input_path is not None:
        try:
            text = Path(input_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise NmtError(f"{input_path}: cannot read sentences: {exc.strerror}") from exc
        sentences = [line for line in text.splitlines() if line.strip()]
        if not sentences:
            raise NmtError(f"{input_path}: no sentences (one per line expected)")
    rows = []
    for n in clients:
        result = asyncio.run(
            run_load(url, n, max_requests, duration_s, sentences, lines_per_request, beam_size)
        )
        row = ({"run": label} if label else {}) | result.summary()
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table of :meth:`LoadResult.summary` dicts (with any extra leading keys, e.g. ``batching``)."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
