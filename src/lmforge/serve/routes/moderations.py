"""POST /v1/moderations: lmforge's own moderation model in OpenAI's response shape."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from ...safety.moderation import ModerationError, moderation_response
from ...store import ApiKey
from .. import protocol as p
from ..auth import require_key
from ..errors import APIError

router = APIRouter(prefix="/v1", tags=["moderations"])


@router.post("/moderations")
async def moderations(body: p.ModerationRequest, key: ApiKey = Depends(require_key)) -> dict:
    try:
        return await run_in_threadpool(moderation_response, body.input)
    except ModerationError as e:
        raise APIError(400, str(e), param="input", code="invalid_value") from None
