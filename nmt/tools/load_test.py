"""A bounded load test of a running server: N concurrent clients POST /translate on loopback, with malformed
requests mixed in.

Each run stops by itself after ``max_requests`` requests in all (None: no limit) or ``duration_s`` seconds,
whichever comes first, and reports requests sent and answered, the requests lost (sent but never answered:
a failed connection or a timeout), errors (answers other than 200), successful requests per second and latency
percentiles. With ``malformed > 0`` one more client sends that many malformed requests (invalid JSON, wrong
types, oversize bodies and lines, invalid UTF-8, missing fields, broken HTTP framing: see
:func:`malformed_requests`), paced evenly over ``duration_s``, each on a fresh connection; every one should be
answered 4xx while the good requests keep succeeding. With ``server_pid`` the server process's resident memory
is sampled through the run. Only loopback URLs are accepted: this is for measuring a server on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from nmt.tools.scale import process_status

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
MEMORY_EVERY_S = 1.0  # how often the server's resident memory is read
_LOST = "connection"  # the status recorded for a request that got no answer
_NO_ANSWER = (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError)


@dataclass
class LoadResult:
    """What one load run measured."""

    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or "connection": no answer) -> count
    malformed: Counter = field(default_factory=Counter)  # (case name, HTTP status or "connection") -> count
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, server RSS)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def lost(self) -> int:
        return self.statuses.get(_LOST, 0)

    @property
    def errors(self) -> int:
        """Answers other than 200 (lost requests are counted apart)."""
        return self.requests - self.lost - self.statuses.get(200, 0)

    def summary(self) -> dict[str, float | int | str]:
        """``clients, requests`` (sent), ``answered, lost, errors, rps`` (successful requests per second),
        ``p50/p95/p99`` latency (ms); with malformed requests ``malformed_sent`` = ``malformed_4xx +
        malformed_other`` (answered with any other status) ``+ malformed_lost``, and ``bad_cases`` (the cases
        not answered 4xx, ``name:status``); with memory samples the server's RSS at the run's start, middle and
        end and its peak (MiB)."""
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.full(1, np.nan)
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        row: dict[str, float | int | str] = {
            "clients": self.clients,
            "requests": self.requests,
            "answered": self.requests - self.lost,
            "lost": self.lost,
            "errors": self.errors,
            "rps": len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0,
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
        }
        if self.malformed:
            refused = sum(n for (_, status), n in self.malformed.items() if _is_4xx(status))
            lost = sum(n for (_, status), n in self.malformed.items() if status == _LOST)
            bad = sorted({f"{case}:{status}" for case, status in self.malformed if not _is_4xx(status)})
            row |= {
                "malformed_sent": sum(self.malformed.values()),
                "malformed_4xx": refused,
                "malformed_other": sum(self.malformed.values()) - refused - lost,
                "malformed_lost": lost,
                "bad_cases": " ".join(bad) or "-",
            }
        if self.rss_mib:
            middle = min(self.rss_mib, key=lambda sample: abs(sample[0] - self.seconds / 2))
            row |= {
                "rss_start_mib": self.rss_mib[0][1],
                "rss_mid_mib": middle[1],
                "rss_end_mib": self.rss_mib[-1][1],
                "rss_peak_mib": max(rss for _, rss in self.rss_mib),
            }
        return row


def _is_4xx(status: int | str) -> bool:
    return isinstance(status, int) and 400 <= status < 500


def check_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``url``; NmtError unless it is plain http on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise NmtError(f"url={url!r}: expected http://127.0.0.1:PORT")
    if not is_loopback(parts.hostname):
        raise NmtError(f"url={url!r}: the load test only targets a server on this machine (127.0.0.1, ::1)")
    return parts.hostname, parts.port or 80


def http_request(
    host: str,
    path: str,
    body: bytes = b"",
    method: str = "POST",
    content_type: str = "application/json",
    content_length: str | None = None,
) -> bytes:
    """One HTTP/1.1 request on the wire; ``content_length`` replaces the true one (to send a false one)."""
    length = str(len(body)) if content_length is None else content_length
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if method == "POST":
        head += f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
    return (head + "\r\n").encode("ascii") + body


def malformed_requests(host: str, path: str, limits: dict[str, int]) -> list[tuple[str, bytes]]:
    """``(name, raw HTTP request)`` for each kind of malformed ``POST path``, sized against the server's
    ``limits`` (``GET /info``'s): every one should be answered 4xx (413, 422, or 400 for a body or framing
    the server cannot parse at all)."""

    def post(body: str | bytes, **options: str) -> bytes:
        return http_request(host, path, body.encode("utf-8") if isinstance(body, str) else body, **options)

    line = DEFAULT_SENTENCES[0]
    over_body = limits["max_body_bytes"] + 1
    return [
        ("invalid_json", post('{"lines": ["' + line + '"')),
        ("not_an_object", post(json.dumps([line]))),
        ("lines_not_a_list", post(json.dumps({"lines": line}))),
        ("line_not_a_string", post(json.dumps({"lines": [3, None]}))),
        ("beam_size_a_string", post(json.dumps({"lines": [line], "beam_size": "2"}))),
        (
            "beam_size_too_large",
            post(json.dumps({"lines": [line], "beam_size": limits["max_beam_size"] + 1})),
        ),
        ("nbest_over_beam", post(json.dumps({"lines": [line], "beam_size": 1, "nbest": 2}))),
        ("alpha_nan", post('{"lines": ["' + line + '"], "alpha": NaN}')),
        ("huge_integer", post('{"lines": ["' + line + '"], "beam_size": ' + "9" * 5000 + "}")),
        ("unknown_key", post(json.dumps({"lines": [line], "model_dir": "/etc"}))),
        ("missing_lines", post(json.dumps({"beam_size": 1}))),
        ("no_lines", post(json.dumps({"lines": []}))),
        ("empty_body", post(b"")),
        ("too_many_lines", post(json.dumps({"lines": [line] * (limits["max_lines"] + 1)}))),
        ("line_too_long", post(json.dumps({"lines": ["x" * (limits["max_line_chars"] + 1)]}))),
        ("body_too_large", post(json.dumps({"lines": ["x" * over_body]}))),
        ("declared_too_large", post(b"", content_length=str(over_body))),  # refused before any body is read
        ("invalid_utf8", post(b'{"lines": ["\xff\xfe ' + line.encode("ascii") + b'"]}')),
        ("deep_nesting", post("[" * 20_000 + "]" * 20_000)),
        ("not_json_content_type", post(json.dumps({"lines": [line]}), content_type="text/plain")),
        ("bad_content_length", post(json.dumps({"lines": [line]}), content_length="12abc")),
    ]


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for JSON POSTs.

    A plain asyncio stream rather than an HTTP client library: at 32 concurrent clients a full client costs
    more CPU than the server it measures, on the same cores.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes, timeout_s: float) -> tuple[int, bytes]:
        """Send the raw ``request``; the response's status code and body."""
        return await asyncio.wait_for(self._send(request), timeout_s)

    async def _send(self, request: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(request)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {
            name.lower(): value.strip() for name, _, value in (h.partition(":") for h in head[1:] if h)
        }
        closing = headers.get("connection", "").lower() == "close"
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif closing:  # e.g. the server's own 400 for a request it cannot frame: the body runs to the end
            body = await reader.read()
        else:
            raise ConnectionError("response without Content-Length")
        if closing:
            self.close()
        return int(head[0].split()[1]), body

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def server_limits(host: str, port: int, base: str, timeout_s: float) -> dict[str, int]:
    """The server's request limits, from ``GET base/info``."""
    connection = _Connection(host, port)
    try:
        status, body = await connection.send(http_request(host, base + "/info", method="GET"), timeout_s)
    except _NO_ANSWER as exc:
        raise NmtError(
            f"http://{host}:{port}{base}/info: no answer ({exc!r}); is the server running?"
        ) from exc
    finally:
        connection.close()
    if status != 200:
        raise NmtError(f"http://{host}:{port}{base}/info answered {status}: is this an nmt server?")
    return json.loads(body)["limits"]


async def run_load(
    url: str,
    clients: int,
    max_requests: int | None,
    duration_s: float,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    lines_per_request: int = 1,
    beam_size: int | None = None,
    timeout_s: float = 60.0,
    malformed: int = 0,
    server_pid: int | None = None,
) -> LoadResult:
    """Run ``clients`` concurrent request loops (one connection each) against ``url`` until ``max_requests``
    were sent in all (None: no limit) or ``duration_s`` has passed; request ``k`` sends ``lines_per_request``
    sentences starting at sentence ``k``. Meanwhile send ``malformed`` malformed requests (cycling through
    :func:`malformed_requests`), paced over ``duration_s``, all of them even if the good requests stop first,
    and read ``server_pid``'s resident memory every :data:`MEMORY_EVERY_S` seconds."""
    host, port = check_url(url)
    base = urlsplit(url).path.rstrip("/")
    path = base + "/translate"
    if clients < 1 or duration_s <= 0 or lines_per_request < 1 or not sentences:
        raise NmtError("clients, lines_per_request and duration_s must be positive")
    if (max_requests is not None and max_requests < 1) or malformed < 0:
        raise NmtError("max_requests must be positive (or None: no limit) and malformed >= 0")
    if server_pid is not None and "VmRSS" not in process_status(server_pid):
        raise NmtError(f"server_pid={server_pid}: no such process (or its memory is not readable)")
    cases = (
        malformed_requests(host, path, await server_limits(host, port, base, timeout_s)) if malformed else []
    )
    result = LoadResult(clients=clients, seconds=0.0)
    issued = 0
    extra = {} if beam_size is None else {"beam_size": beam_size}
    start = time.perf_counter()
    deadline = start + duration_s
    finished = asyncio.Event()

    async def worker() -> None:
        nonlocal issued
        connection = _Connection(host, port)
        try:
            while (max_requests is None or issued < max_requests) and time.perf_counter() < deadline:
                k = issued
                issued += 1
                lines = [sentences[(k + i) % len(sentences)] for i in range(lines_per_request)]
                body = json.dumps({"lines": lines, **extra}).encode("utf-8")
                sent = time.perf_counter()
                try:
                    status, _ = await connection.send(http_request(host, path, body), timeout_s)
                except _NO_ANSWER:
                    connection.close()
                    result.statuses[_LOST] += 1
                    continue
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
        finally:
            connection.close()

    async def malformed_sender() -> None:
        for k in range(malformed):
            await asyncio.sleep(max(0.0, start + k * duration_s / malformed - time.perf_counter()))
            name, request = cases[k % len(cases)]
            connection = _Connection(host, port)  # fresh: several cases end their connection
            try:
                status, _ = await connection.send(request, timeout_s)
            except _NO_ANSWER:
                status = _LOST
            finally:
                connection.close()
            result.malformed[name, status] += 1

    async def memory_sampler() -> None:
        while True:
            kib = process_status(server_pid).get("VmRSS")
            if kib is not None:
                result.rss_mib.append((time.perf_counter() - start, kib / 1024))
            if finished.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(finished.wait(), MEMORY_EVERY_S)

    sampler = asyncio.create_task(memory_sampler()) if server_pid is not None else None
    await asyncio.gather(malformed_sender(), *(worker() for _ in range(clients)))
    result.seconds = time.perf_counter() - start
    finished.set()
    if sampler is not None:
        await sampler
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
    malformed: int = 0,
    server_pid: int | None = None,
) -> list[dict]:
    """One :func:`run_load` per client count (sentences from ``input_path``, one per line, or the digit
    defaults; ``max_requests=0``: no limit, time alone ends a run); rows of :meth:`LoadResult.summary`, with a
    first ``run`` column when ``label`` is given."""
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
            run_load(
                url,
                n,
                max_requests or None,
                duration_s,
                sentences,
                lines_per_request,
                beam_size,
                malformed=malformed,
                server_pid=server_pid,
            )
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
