"""The FastAPI application: ``POST /translate``, ``GET /health``, ``GET /info`` and the attention page at ``/``.

Every error a client can cause is a 4xx/5xx JSON body ``{"error": "<what went wrong and what to do>"}``:
413 for a body over ``max_body_bytes``, 422 for malformed JSON, wrong types, unknown keys or values outside
the limits, 503 when the queue is full or the server is stopping, 504 past ``request_timeout_s``.
Requests carry only text and search settings, never a path: the model directory is fixed at start-up.
"""

import asyncio
import dataclasses
import json
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from omegaconf import OmegaConf
from starlette.exceptions import HTTPException as StarletteHTTPException

from nmt.config import SearchConfig, ServeConfig
from nmt.errors import NmtError
from nmt.serve.batching import BatcherClosed, MicroBatcher, QueueFull
from nmt.serve.limits import BodySizeLimit
from nmt.serve.schemas import (
    AttentionOut,
    ErrorResponse,
    HealthResponse,
    HypothesisOut,
    InfoResponse,
    SearchOut,
    TranslateResponse,
    TranslationOut,
    translate_request_model,
)
from nmt.translate import Translation, Translator, attention_records

STATIC_DIR = Path(__file__).parent / "static"
# the page loads only its own script and style, and talks only to this server
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
}
WEIGHT_DECIMALS = 4
NOT_AN_OBJECT = {"model_attributes_type", "model_type", "dict_type"}


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats turned into None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def _error(status: int, message: str, detail: list[dict] | None = None, **headers: str) -> JSONResponse:
    body = ErrorResponse(error=message, detail=detail).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers or None)


def _describe_validation(errors: list[dict]) -> tuple[str, list[dict]]:
    """One readable sentence plus ``[{loc, msg}]`` for each problem pydantic found."""
    detail = []
    for err in errors:
        loc = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        detail.append(
            {"loc": loc or "body", "msg": str(err.get("msg", "invalid")).removeprefix("Value error, ")}
        )
    if any(err.get("type") == "json_invalid" for err in errors):
        return "request body is not valid JSON", detail
    if any(tuple(err.get("loc", ())) == ("body",) and err.get("type") in NOT_AN_OBJECT for err in errors):
        return (
            'request body must be a JSON object such as {"lines": ["..."]} (Content-Type: application/json)',
            detail,
        )
    return "invalid request: " + "; ".join(f"{d['loc']}: {d['msg']}" for d in detail), detail


def _model_info(translator: Translator, cfg: ServeConfig) -> dict[str, Any]:
    """What ``GET /info`` returns (read once at start-up; only the directory's name, not its path)."""
    config = OmegaConf.to_container(OmegaConf.structured(translator.config), enum_to_str=True)
    model_dir = Path(cfg.model_dir)
    metrics = None
    if (model_dir / "metrics.json").is_file():
        try:
            metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NmtError(f"{model_dir / 'metrics.json'}: unreadable ({exc}); fix or remove it") from exc
    tokenizer = translator.tokenizer
    return json_safe(
        {
            "model_name": model_dir.resolve().name,
            "src_lang": config["data"]["src_lang"],
            "tgt_lang": config["data"]["tgt_lang"],
            "vocab": {
                "src": tokenizer.src_vocab_size,
                "tgt": tokenizer.tgt_vocab_size,
                "joint": tokenizer.joint,
            },
            "model": config["model"],
            "tokenizer": config["tokenizer"],
            "search_defaults": OmegaConf.to_container(OmegaConf.structured(cfg.search), enum_to_str=True),
            "limits": {
                "max_lines": cfg.max_lines,
                "max_line_chars": cfg.max_line_chars,
                "max_body_bytes": cfg.max_body_bytes,
                "max_beam_size": cfg.max_beam_size,
                "request_timeout_s": cfg.request_timeout_s,
            },
            "batching": {
                "enabled": cfg.batching,
                "max_batch_wait_ms": cfg.max_batch_wait_ms,
                "max_batch_tokens": cfg.max_batch_tokens,
                "max_queue_lines": cfg.max_queue_lines,
            },
            "quantize": str(cfg.quantize),
            "device": str(translator.device),
            "metrics": metrics if isinstance(metrics, dict) else None,
        }
    )


def _translation_out(result: Translation, record: dict | None) -> TranslationOut:
    hypotheses = [
        HypothesisOut(text=text, score=json_safe(hyp.score), log_prob=json_safe(hyp.log_prob))
        for text, hyp in zip(result.hypotheses, result.nbest)
    ]
    attention = None
    if record is not None:
        weights = [[round(w, WEIGHT_DECIMALS) for w in row] for row in record["attention"].tolist()]
        attention = AttentionOut(
            src_tokens=record["src_tokens"], tgt_tokens=record["tgt_tokens"], weights=weights
        )
    return TranslationOut(source=result.source, text=result.text, hypotheses=hypotheses, attention=attention)


def create_app(translator: Translator, cfg: ServeConfig) -> FastAPI:
    """The API and page for ``translator`` (a loaded model directory) under ``cfg``'s limits.

    The micro-batcher starts and stops with the app's lifespan (``with TestClient(app)`` runs it in tests).
    """
    info = _model_info(translator, cfg)

    def count_tokens(line: str) -> int:
        text = translator.normalise(line)
        return len(translator.tokenizer.encode_src([text])[0]) + 1 if text else 0

    batcher: MicroBatcher[SearchConfig, Translation] = MicroBatcher(
        run=lambda lines, search: translator.translate(lines, search),
        count_tokens=count_tokens,
        max_tokens=cfg.max_batch_tokens,
        max_wait_s=cfg.max_batch_wait_ms / 1000.0,
        max_queue_lines=cfg.max_queue_lines,
        enabled=cfg.batching,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="nmt translation API",
        version="1",
        description=f"{info['src_lang']} → {info['tgt_lang']} with the model {info['model_name']}",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    app.state.batcher = batcher
    request_model = translate_request_model(cfg)
    errors = {code: {"model": ErrorResponse} for code in (413, 422, 503, 504)}

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, detail = _describe_validation(list(exc.errors()))
        return _error(422, message, detail)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _on_crash(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"translation failed: {type(exc).__name__}: {exc}")

    @app.post("/translate", response_model=TranslateResponse, responses=errors)
    async def translate(body: request_model) -> Any:  # type: ignore[valid-type]
        """Translate ``lines`` (one result per line, in order) with the given search settings."""
        search = dataclasses.replace(cfg.search, beam_size=body.beam_size, nbest=body.nbest, alpha=body.alpha)
        started = time.perf_counter()
        try:
            results = await asyncio.wait_for(batcher.submit(list(body.lines), search), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(
                504,
                f"translation did not finish within request_timeout_s={cfg.request_timeout_s} s; "
                "send fewer or shorter lines, or retry when the server is less busy",
            )
        except QueueFull as exc:
            return _error(503, f"server busy: {exc}; retry shortly", **{"Retry-After": "1"})
        except BatcherClosed as exc:
            return _error(503, f"not accepting requests: {exc}")
        except NmtError as exc:
            return _error(422, str(exc))
        records = (
            attention_records(results, translator.tokenizer) if body.attention else [None] * len(results)
        )
        return TranslateResponse(
            translations=[_translation_out(r, rec) for r, rec in zip(results, records)],
            search=SearchOut(
                beam_size=search.beam_size,
                nbest=search.nbest,
                alpha=search.alpha,
                length_norm=str(search.length_norm),
            ),
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness, and how busy the model is."""
        return HealthResponse(status="ok", queued_lines=batcher.queued_lines, batches_run=batcher.batches_run)

    @app.get("/info", response_model=InfoResponse)
    async def model_info() -> dict[str, Any]:
        """The model's configuration, languages, vocabulary sizes, training metrics and the server's limits."""
        return info

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
