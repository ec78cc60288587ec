"""The serving API: endpoints, limits and errors (TestClient), micro-batching, the load-test client."""

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from hydra import compose, initialize_config_dir

from nmt.checkpoint import average_state_dicts, kept_checkpoints
from nmt.cli import CONF_DIR
from nmt.config import ConfigValueError, SearchConfig, ServeConfig, to_object
from nmt.errors import NmtError
from nmt.serve.app import create_app
from nmt.serve.batching import BatcherClosed, MicroBatcher, QueueFull
from nmt.serve.server import serve, serve_in_thread
from nmt.tools.load_test import check_url, run_load
from nmt.translate import Translator

ROOT = Path(__file__).resolve().parents[1]
LIMITS = dict(max_lines=4, max_line_chars=60, max_body_bytes=2000, max_beam_size=6)


@pytest.fixture(scope="module")
def translator(digit_model_dir):
    return Translator.from_dir(digit_model_dir, device="cpu")


def make_cfg(model_dir, **overrides) -> ServeConfig:
    values = dict(LIMITS, model_dir=str(model_dir), search=SearchConfig(beam_size=4))
    values.update(overrides)
    return ServeConfig(**values)


@pytest.fixture(scope="module")
def client(translator, digit_model_dir):
    with TestClient(create_app(translator, make_cfg(digit_model_dir))) as test_client:
        yield test_client


def post(client, body):
    return client.post("/translate", json=body)


# ------------------------------------------------------------------------------------------ happy paths
def test_translate_matches_the_translator(client, translator):
    lines = ["three one four", "nine two"]
    response = post(client, {"lines": lines})
    assert response.status_code == 200
    body = response.json()
    direct = translator.translate(lines, SearchConfig(beam_size=4))
    assert [t["text"] for t in body["translations"]] == [r.text for r in direct]
    assert [t["source"] for t in body["translations"]] == lines
    first = body["translations"][0]
    assert first["hypotheses"][0]["score"] == pytest.approx(direct[0].nbest[0].score, abs=1e-5)
    assert first["attention"] is None
    assert body["search"] == {"beam_size": 4, "nbest": 1, "alpha": 1.0, "length_norm": "gnmt"}


def test_nbest_lists_are_ranked(client):
    body = post(client, {"lines": ["five three five"], "beam_size": 5, "nbest": 3, "alpha": 0.6}).json()
    [translation] = body["translations"]
    scores = [h["score"] for h in translation["hypotheses"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert translation["text"] == translation["hypotheses"][0]["text"]
    assert body["search"]["alpha"] == 0.6


def test_attention_has_one_row_per_target_token_and_one_column_per_source_token(client):
    body = post(client, {"lines": ["seven zero two", "one"], "attention": True}).json()
    for translation in body["translations"]:
        attention = translation["attention"]
        src, tgt, weights = attention["src_tokens"], attention["tgt_tokens"], attention["weights"]
        assert src[-1] == "</s>" and tgt[-1] == "</s>"
        assert len(weights) == len(tgt)
        assert all(len(row) == len(src) for row in weights)
        assert all(sum(row) == pytest.approx(1.0, abs=1e-3) for row in weights)
        assert "".join(src[:-1]).replace("▁", " ").strip() == translation["source"]


def test_empty_lines_stay_aligned(client):
    lines = ["two two", "", "   ", "eight"]
    body = post(client, {"lines": lines, "attention": True}).json()
    translations = body["translations"]
    assert [t["source"] for t in translations] == lines
    assert [bool(t["text"]) for t in translations] == [True, False, False, True]
    assert translations[1]["hypotheses"] == [] and translations[1]["attention"]["weights"] == []


def test_health_info_and_openapi(client, translator, digit_model_dir):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert (info["src_lang"], info["tgt_lang"]) == ("en", "fr")
    tok = translator.tokenizer
    assert info["vocab"] == {"src": tok.src_vocab_size, "tgt": tok.tgt_vocab_size, "joint": True}
    assert tok.tgt_vocab_size < 40  # the joint 40-piece model, trimmed to the French side's pieces
    assert info["model"]["hidden_size"] == 32 and info["model"]["rnn_type"] == "gru"
    metrics = json.loads((Path(digit_model_dir) / "metrics.json").read_text())
    assert info["metrics"]["best_dev_bleu"] == pytest.approx(metrics["best_dev_bleu"])
    assert info["limits"]["max_lines"] == 4
    assert str(Path(digit_model_dir).parent) not in json.dumps(info)  # the server's paths stay private
    schema = client.get("/openapi.json").json()
    assert {"/translate", "/health", "/info"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["TranslateRequest"]
    assert request["properties"]["lines"]["maxItems"] == 4
    assert request["properties"]["beam_size"]["maximum"] == 6
    assert request["additionalProperties"] is False


def test_page_and_static_files_are_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        # no CDN or other outside address; the SVG namespace is a name, not a fetch
        assert "://" not in asset.text.replace("http://www.w3.org/2000/svg", "")
    assert "://" not in page.text


# ----------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lines": ["one"] * 5}, "lines"),  # max_lines=4
        ({"lines": ["one " * 20]}, "lines.0"),  # max_line_chars=60
        ({"lines": []}, "lines"),
        ({"lines": ["one"], "beam_size": 7}, "beam_size"),  # max_beam_size=6
        ({"lines": ["one"], "beam_size": 0}, "beam_size"),
        ({"lines": ["one"], "beam_size": 2, "nbest": 3}, "nbest=3"),
        ({"lines": ["one"], "alpha": -1.0}, "alpha"),
        ({"lines": "one"}, "lines"),
        ({"lines": [1]}, "lines.0"),
        ({"lines": ["one"], "beam_size": "5"}, "beam_size"),
        ({"lines": ["one"], "attention": "yes"}, "attention"),
        ({"lines": ["one"], "model_dir": "/etc"}, "model_dir"),  # no paths from clients
        ({}, "lines"),
    ],
)
def test_invalid_requests_get_422_naming_the_field(client, body, field):
    response = post(client, body)
    assert response.status_code == 422
    assert response.json()["error"].startswith("invalid request:")
    assert field in response.json()["error"]


def test_malformed_json_gets_422(client):
    response = client.post(
        "/translate", content=b'{"lines": ["one"', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "request body is not valid JSON"


@pytest.mark.parametrize(
    ("content", "content_type"), [(b"[1, 2]", "application/json"), (b'{"lines": ["one"]}', "text/plain")]
)
def test_a_body_that_is_not_a_json_object_gets_422(client, content, content_type):
    response = client.post("/translate", content=content, headers={"content-type": content_type})
    assert response.status_code == 422
    assert response.json()["error"].startswith("request body must be a JSON object")


def test_oversized_bodies_get_413(client):
    big = json.dumps({"lines": ["x" * 1500, "y" * 1500]}).encode()
    declared = client.post("/translate", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "max_body_bytes=2000" in declared.json()["error"]
    chunked = client.post(
        "/translate", content=iter([big[:1000], big[1000:]]), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert post(client, {"lines": ["one"]}).status_code == 200  # the server is fine afterwards


class BlockingTranslator:
    """The real translator behind a gate: ``translate`` waits until the test opens it."""

    def __init__(self, translator):
        self.inner = translator
        self.tokenizer, self.config, self.device = translator.tokenizer, translator.config, translator.device
        self.normalise = translator.normalise
        self.gate = threading.Event()
        self.entered = threading.Event()

    def translate(self, lines, cfg):
        self.entered.set()
        assert self.gate.wait(10)
        return self.inner.translate(lines, cfg)


async def with_app(app, fn):
    """Run ``fn(client)`` against ``app`` with its lifespan (the micro-batcher) running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as async_client:
            return await fn(async_client)


def test_timeout_gets_504(translator, digit_model_dir):
    slow = BlockingTranslator(translator)
    app = create_app(slow, make_cfg(digit_model_dir, request_timeout_s=0.2))

    async def scenario(c):
        response = await c.post("/translate", json={"lines": ["one"]})
        slow.gate.set()
        return response

    response = asyncio.run(with_app(app, scenario))
    assert response.status_code == 504
    assert "request_timeout_s=0.2" in response.json()["error"]


def test_full_queue_gets_503(translator, digit_model_dir):
    slow = BlockingTranslator(translator)
    app = create_app(slow, make_cfg(digit_model_dir, max_queue_lines=4, batching=False))

    async def scenario(c):
        running = asyncio.ensure_future(c.post("/translate", json={"lines": ["one"] * 4}))
        await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait, 10)
        queued = asyncio.ensure_future(c.post("/translate", json={"lines": ["two"] * 3}))
        while app.state.batcher.queued_lines < 3:
            await asyncio.sleep(0.01)
        refused = await c.post("/translate", json={"lines": ["three"] * 2})
        slow.gate.set()
        return refused, await running, await queued

    refused, running, queued = asyncio.run(with_app(app, scenario))
    assert refused.status_code == 503 and "retry" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    assert running.status_code == 200 and queued.status_code == 200


class BrokenTranslator(BlockingTranslator):
    def translate(self, lines, cfg):
        raise RuntimeError("out of memory")


def test_a_model_failure_gets_500_with_the_reason(translator, digit_model_dir):
    broken = BrokenTranslator(translator)
    with TestClient(create_app(broken, make_cfg(digit_model_dir)), raise_server_exceptions=False) as c:
        response = c.post("/translate", json={"lines": ["one"]})
        assert response.status_code == 500
        assert response.json()["error"] == "translation failed: RuntimeError: out of memory"
        assert c.get("/health").json()["status"] == "ok"


def test_config_limits_are_checked(digit_model_dir):
    with pytest.raises(
        ConfigValueError, match=r"^max_queue_lines=2: must be >= max_lines=4, or a full request"
    ):
        make_cfg(digit_model_dir, max_queue_lines=2)
    with pytest.raises(ConfigValueError, match=r"^search\.beam_size=8: must be <= max_beam_size=6$"):
        make_cfg(digit_model_dir, search=SearchConfig(beam_size=8))


def test_serve_loads_the_weights_its_config_names(digit_model_dir, monkeypatch):
    """``serve average=2``: the app serves the mean of the last two kept checkpoints, not the best one."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        composed = compose("serve", [f"model_dir={digit_model_dir}", "average=2", "device=cpu"])
    served = {}
    monkeypatch.setattr(
        "nmt.serve.app.create_app", lambda translator, cfg: served.setdefault("model", translator.model)
    )
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.setdefault("app", app))
    serve(to_object(composed, ServeConfig))
    assert served["app"] is served["model"]  # what create_app returned is what uvicorn ran
    weights = served["model"].model.state_dict()  # the trained weights behind the folded decoder
    mean = average_state_dicts(kept_checkpoints(digit_model_dir, 2, "average"), torch.device("cpu"))
    best = Translator.from_dir(digit_model_dir, device="cpu").model.model.state_dict()
    assert weights.keys() == mean.keys()
    for name, tensor in mean.items():
        torch.testing.assert_close(weights[name], tensor)
    assert any(not torch.equal(mean[name], best[name]) for name in mean)


# ----------------------------------------------------------------------------------------- micro-batching
def concurrent_posts(app, bodies):
    async def scenario(c):
        responses = await asyncio.gather(*(c.post("/translate", json=b) for b in bodies))
        return responses, app.state.batcher.batches_run

    return asyncio.run(with_app(app, scenario))


def tokens(translator, lines):
    """What the batcher counts for ``lines``: subword tokens + EOS (0 for an empty line)."""
    return sum(len(ids) + 1 for ids in translator.tokenizer.encode_src(lines) if ids)


def test_concurrent_requests_share_one_model_call(translator, digit_model_dir):
    lines = ["three one", "nine", "four four two", "six seven", "", "zero"]
    # the batch closes when it is full, i.e. when the last request arrived; the long window is only a bound
    budget = tokens(translator, lines)
    app = create_app(translator, make_cfg(digit_model_dir, max_batch_wait_ms=5000, max_batch_tokens=budget))
    responses, batches = concurrent_posts(app, [{"lines": [line]} for line in lines])
    assert batches == 1
    direct = translator.translate(lines, SearchConfig(beam_size=4))
    assert [r.json()["translations"][0]["text"] for r in responses] == [d.text for d in direct]


def test_incompatible_settings_and_disabled_batching_run_apart(translator, digit_model_dir):
    bodies = [{"lines": ["one two"], "beam_size": b} for b in (1, 4, 1, 4)]
    budget = tokens(translator, ["one two"] * 2)
    app = create_app(translator, make_cfg(digit_model_dir, max_batch_wait_ms=5000, max_batch_tokens=budget))
    responses, batches = concurrent_posts(app, bodies)
    assert batches == 2 and all(r.status_code == 200 for r in responses)
    app = create_app(translator, make_cfg(digit_model_dir, batching=False))
    responses, batches = concurrent_posts(app, [{"lines": ["one two"]}] * 3)
    assert batches == 3 and all(r.status_code == 200 for r in responses)


def run_batcher(scenario, **kwargs):
    """Run ``scenario(batcher, calls)`` with a batcher over a fake model that records its calls."""
    calls = []

    def fake_run(lines, settings):
        calls.append((list(lines), settings))
        if "boom" in lines:
            raise RuntimeError("model exploded")
        return [f"{settings}:{line}" for line in lines]

    options = dict(count_tokens=len, max_tokens=10, max_wait_s=5.0, max_queue_lines=8) | kwargs

    async def main():
        batcher = MicroBatcher(fake_run, **options)
        batcher.start()
        try:
            return await scenario(batcher, calls)
        finally:
            await batcher.stop()

    return asyncio.run(main()), calls


def test_batcher_respects_the_token_bound_and_order():
    async def scenario(batcher, calls):
        jobs = [batcher.submit([word], "s") for word in ("aaaa", "bbbb", "cccc", "dddddddddddddd")]
        return await asyncio.gather(*jobs)

    results, calls = run_batcher(scenario)
    assert results == [["s:aaaa"], ["s:bbbb"], ["s:cccc"], ["s:dddddddddddddd"]]
    # 4 + 4 tokens fit under 10; the third would not; the 14-token job runs alone
    assert [c[0] for c in calls] == [["aaaa", "bbbb"], ["cccc"], ["dddddddddddddd"]]


def test_batcher_fails_every_job_of_a_failed_batch_and_carries_on():
    async def scenario(batcher, calls):
        results = await asyncio.gather(
            batcher.submit(["boom"], "s"), batcher.submit(["ok"], "s"), return_exceptions=True
        )
        return results, await batcher.submit(["after"], "s")

    (failed, after), _ = run_batcher(scenario, max_wait_s=0.05)
    assert all(isinstance(r, RuntimeError) for r in failed)
    assert after == ["s:after"]


def test_batcher_skips_withdrawn_jobs_and_bounds_its_queue():
    async def scenario(batcher, calls):
        withdrawn = asyncio.ensure_future(batcher.submit(["gone"], "s"))
        await asyncio.sleep(0)
        withdrawn.cancel()
        kept = asyncio.ensure_future(batcher.submit(["kept"], "s"))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(["x"] * 8, "s")
        return await kept

    result, calls = run_batcher(scenario, max_wait_s=0.05)
    assert result == ["s:kept"] and calls == [(["kept"], "s")]


def test_batcher_stop_fails_queued_jobs():
    async def scenario(batcher, calls):
        waiting = asyncio.ensure_future(batcher.submit(["late"], "s"))
        await asyncio.sleep(0)
        await batcher.stop()
        with pytest.raises(BatcherClosed):
            await waiting
        with pytest.raises(BatcherClosed):
            await batcher.submit(["later"], "s")
        return calls

    calls, _ = run_batcher(scenario)
    assert calls == []


# ------------------------------------------------------------------------------- int8, script, load test
def test_int8_model_serves(digit_model_dir, translator):
    quantized = Translator.from_dir(digit_model_dir, device="cpu", quantize="int8")
    with TestClient(create_app(quantized, make_cfg(digit_model_dir, quantize="int8"))) as c:
        body = c.post("/translate", json={"lines": ["three one four"]}).json()
        assert c.get("/info").json()["quantize"] == "int8"
    assert body["translations"][0]["text"] == translator.translate(["three one four"])[0].text


@pytest.mark.slow
def test_serve_script_reports_a_bad_model_dir(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/serve.py"), f"model_dir={tmp_path / 'missing'}", "port=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not a directory" in result.stderr and "Traceback" not in result.stderr


def test_load_test_counts_requests_and_refuses_remote_hosts(translator, digit_model_dir):
    app = create_app(translator, make_cfg(digit_model_dir))
    with serve_in_thread(app) as url:
        result = asyncio.run(run_load(url, clients=3, max_requests=12, duration_s=30, lines_per_request=2))
        refused = asyncio.run(run_load(url, clients=2, max_requests=4, duration_s=30, lines_per_request=5))
    summary = result.summary()
    assert (summary["requests"], summary["errors"]) == (12, 0)
    assert refused.statuses == {422: 4} and refused.errors == 4  # 5 lines > max_lines=4
    assert len(result.latencies_ms) == 12 and summary["p50_ms"] <= summary["p99_ms"]
    with pytest.raises(NmtError, match="only targets a server on this machine"):
        check_url("http://192.168.1.5:8000")
    assert check_url("http://[::1]:8000/") == ("::1", 8000)
