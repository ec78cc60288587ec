"""The API's request and response bodies (pydantic): they are validated and appear in the OpenAPI schema.

The request model is built from the server's limits, so ``/openapi.json`` states the real bounds; it is
strict (``"5"`` is not a beam size) and closed (unknown keys such as a path are refused).
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from nmt.config import ServeConfig

MAX_ALPHA = 5.0


def translate_request_model(cfg: ServeConfig) -> type[BaseModel]:
    """The ``POST /translate`` body for ``cfg``'s limits; omitted search settings take ``cfg.search``'s."""
    line = Annotated[str, StringConstraints(max_length=cfg.max_line_chars)]

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            strict=True,
            json_schema_extra={"examples": [{"lines": ["Hello world."], "beam_size": 5, "attention": True}]},
        )

        lines: list[line] = Field(
            min_length=1,
            max_length=cfg.max_lines,
            description="source sentences, one per item; an empty line gives an empty translation",
        )
        beam_size: int = Field(cfg.search.beam_size, ge=1, le=cfg.max_beam_size)
        nbest: int = Field(cfg.search.nbest, ge=1, le=cfg.max_beam_size, description="at most beam_size")
        alpha: float = Field(
            cfg.search.alpha, ge=0.0, le=MAX_ALPHA, description="GNMT length-penalty exponent"
        )
        attention: bool = Field(False, description="also return the best hypothesis' attention weights")

        @model_validator(mode="after")
        def _nbest_within_beam(self) -> "TranslateRequest":
            if self.nbest > self.beam_size:
                raise ValueError(f"nbest={self.nbest} must not exceed beam_size={self.beam_size}")
            return self

    return TranslateRequest


class HypothesisOut(BaseModel):
    text: str
    score: float | None = Field(description="log-prob after length normalisation (ranking score)")
    log_prob: float | None = Field(description="sum of token log-probs, EOS included")


class AttentionOut(BaseModel):
    src_tokens: list[str] = Field(description="source subword pieces + '</s>'")
    tgt_tokens: list[str] = Field(description="best hypothesis' pieces + '</s>'")
    weights: list[list[float]] = Field(description="[len(tgt_tokens)][len(src_tokens)], rows sum to 1")


class TranslationOut(BaseModel):
    source: str
    text: str = Field(description="the best hypothesis ('' for an empty line)")
    hypotheses: list[HypothesisOut] = Field(description="n-best, best first; empty for an empty line")
    attention: AttentionOut | None = None


class SearchOut(BaseModel):
    beam_size: int
    nbest: int
    alpha: float
    length_norm: str


class TranslateResponse(BaseModel):
    translations: list[TranslationOut] = Field(description="one per request line, in order")
    search: SearchOut
    elapsed_ms: float


class HealthResponse(BaseModel):
    status: str
    queued_lines: int
    batches_run: int


class InfoResponse(BaseModel):
    model_name: str
    src_lang: str
    tgt_lang: str
    vocab: dict[str, Any]
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    search_defaults: dict[str, Any]
    limits: dict[str, Any]
    batching: dict[str, Any]
    quantize: str
    device: str
    metrics: dict[str, Any] | None = Field(description="the model directory's metrics.json, if any")


class ErrorResponse(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None
