"""POST /v1/watermark/detect: was this text generated here with the green-list watermark (safety/watermark.py)?
The server's secret never leaves it; the caller names the model (its tokenizer and vocabulary define the
green lists) and gets the z-score and p-value of Kirchenbauer et al. (2023)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, field_validator

from .. import protocol as p

from ...safety.watermark import WatermarkConfig, detect_text
from ...store import ApiKey
from ..auth import require_key
from ..errors import APIError

router = APIRouter(prefix="/v1", tags=["watermark"])
THRESHOLD = 4.0  # z above which text counts as watermarked: a one-sided p of 3e-5


class DetectRequest(p.Request):
    text: str
    model: str
    gamma: float | None = Field(None, gt=0, lt=1)
    key_id: str | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("it must not be empty")
        return v


class Detection(BaseModel):
    object: Literal["watermark.detection"] = "watermark.detection"
    model: str
    key_id: str
    gamma: float
    z_score: float
    p_value: float
    num_tokens_scored: int
    num_green: int
    green_fraction: float
    threshold: float
    is_watermarked: bool


@router.post("/watermark/detect", response_model=Detection)
async def detect(body: DetectRequest, request: Request, key: ApiKey = Depends(require_key)) -> Detection:
    state = request.app.state.lmforge
    settings = state.settings
    if settings.watermark_key is None:
        raise APIError(400, "Watermarking is not configured on this server (the administrator sets "
                            "LMFORGE_WATERMARK_KEY).", code="watermark_unavailable")
    if body.key_id not in (None, settings.watermark_key_id):
        raise APIError(400, f"Invalid value for 'key_id': this server's watermark key is "
                            f"'{settings.watermark_key_id}'.", param="key_id", code="invalid_value")
    served = state.model(body.model, "generate")
    gamma = body.gamma or settings.watermark_gamma
    config = WatermarkConfig(settings.watermark_key.get_secret_value(), served.model.config.vocab_size, gamma)
    try:
        d = await run_in_threadpool(detect_text, body.text, served.tokenizer, config, threshold=THRESHOLD)
    except ValueError as e:
        raise APIError(400, f"Invalid value for 'text': {e}.", param="text", code="invalid_value") from None
    return Detection(model=served.name, key_id=settings.watermark_key_id, gamma=gamma, z_score=d.z_score,
                     p_value=d.p_value, num_tokens_scored=d.num_tokens_scored, num_green=d.num_green,
                     green_fraction=d.green_fraction, threshold=THRESHOLD, is_watermarked=d.watermarked)
