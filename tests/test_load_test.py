"""The load test (nmt/tools/load_test.py): its counts, and a short run with malformed requests mixed in
against a real server on loopback serving the committed fixture model."""

import asyncio
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from nmt.config import SearchConfig, ServeConfig
from nmt.errors import NmtError
from nmt.serve.app import create_app
from nmt.serve.server import serve_in_thread
from nmt.tools.load_test import LoadResult, malformed_requests, run_load
from nmt.translate import Translator

FIXTURE = Path(__file__).parent / "fixtures" / "model_dir_v2"
LIMITS = {"max_lines": 4, "max_line_chars": 50, "max_body_bytes": 4096, "max_beam_size": 3}


@pytest.fixture(scope="module")
def url():
    cfg = ServeConfig(model_dir=str(FIXTURE), device="cpu", search=SearchConfig(beam_size=2), **LIMITS)
    with serve_in_thread(create_app(Translator.from_config(cfg), cfg)) as base:
        yield base


def test_summary_counts_add_up():
    result = LoadResult(
        clients=2,
        seconds=2.0,
        latencies_ms=[10.0, 20.0, 30.0, 40.0],
        statuses=Counter({200: 4, 503: 2, "connection": 1}),
        malformed=Counter({("a", 422): 3, ("b", 413): 1, ("b", 500): 2, ("c", "connection"): 1}),
        rss_mib=[(0.0, 100.0), (0.9, 120.0), (2.1, 110.0)],
    )
    assert result.summary() == {
        "clients": 2,
        "requests": 7,
        "answered": 6,
        "lost": 1,
        "errors": 2,
        "rps": 2.0,
        "p50_ms": 25.0,
        "p95_ms": pytest.approx(38.5),
        "p99_ms": pytest.approx(39.7),
        "malformed_sent": 7,
        "malformed_4xx": 4,
        "malformed_other": 2,
        "malformed_lost": 1,
        "bad_cases": "b:500 c:connection",
        "rss_start_mib": 100.0,
        "rss_mid_mib": 120.0,
        "rss_end_mib": 110.0,
        "rss_peak_mib": 120.0,
    }


def test_malformed_requests_are_sized_against_the_limits():
    cases = dict(malformed_requests("127.0.0.1", "/translate", LIMITS))
    assert len(cases) == 21 and all(raw.startswith(b"POST /translate HTTP/1.1\r\n") for raw in cases.values())
    head, _, body = cases["line_too_long"].partition(b"\r\n\r\n")
    assert len(json.loads(body)["lines"][0]) == LIMITS["max_line_chars"] + 1
    assert f"Content-Length: {len(body)}".encode() in head
    assert len(cases["body_too_large"].partition(b"\r\n\r\n")[2]) > LIMITS["max_body_bytes"]
    assert cases["declared_too_large"].endswith(
        f"Content-Length: {LIMITS['max_body_bytes'] + 1}\r\n\r\n".encode()
    )
    assert (
        len(json.loads(cases["too_many_lines"].partition(b"\r\n\r\n")[2])["lines"]) == LIMITS["max_lines"] + 1
    )


def test_malformed_requests_are_all_refused_with_4xx_while_good_ones_succeed(url):
    n_cases = len(malformed_requests("127.0.0.1", "/translate", LIMITS))
    result = asyncio.run(
        run_load(
            url, clients=2, max_requests=None, duration_s=2.0, malformed=2 * n_cases, server_pid=os.getpid()
        )
    )
    summary = result.summary()
    assert summary["malformed_sent"] == summary["malformed_4xx"] == 2 * n_cases
    assert (summary["malformed_other"], summary["malformed_lost"], summary["bad_cases"]) == (0, 0, "-")
    assert sorted(set(case for case, _ in result.malformed)) == sorted(
        dict(malformed_requests("127.0.0.1", "/translate", LIMITS))
    )
    assert all(n == 2 for n in Counter(case for case, _ in result.malformed.elements()).values())
    assert {status for _, status in result.malformed} <= {400, 413, 422}
    assert summary["requests"] == summary["answered"] == result.statuses[200] == len(result.latencies_ms) > 0
    assert (summary["lost"], summary["errors"]) == (0, 0)
    assert summary["rss_start_mib"] > 0 and summary["rss_peak_mib"] >= summary["rss_end_mib"]
    assert len(result.rss_mib) >= 2 and result.rss_mib[-1][0] >= result.seconds


def test_a_request_limit_ends_the_run_and_a_missing_server_process_is_refused(url):
    result = asyncio.run(run_load(url, clients=3, max_requests=5, duration_s=30.0))
    assert result.statuses == {200: 5} and not result.malformed and not result.rss_mib
    with pytest.raises(NmtError, match="server_pid=0: no such process"):
        asyncio.run(run_load(url, clients=1, max_requests=1, duration_s=1.0, server_pid=0))
