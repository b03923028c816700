"""The OpenAI-compatible endpoints under /v1: parse, authenticate, delegate (generation goes through the
generation service, service.py, via serving.py)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ...store import ApiKey
from .. import serving
from .. import protocol as p
from ..auth import require_key
from ..errors import model_not_found
from ..middleware import request_id
from ..service import Caller

router = APIRouter(prefix="/v1", tags=["openai"])


def state(request: Request) -> serving.AppState:
    return request.app.state.lmforge


@router.get("/models", response_model=p.ModelList)
def list_models(key: ApiKey = Depends(require_key), s: serving.AppState = Depends(state)):
    return serving.models(s)


@router.get("/models/{model:path}", response_model=p.ModelCard)
def get_model(model: str, key: ApiKey = Depends(require_key), s: serving.AppState = Depends(state)):
    if model not in s.models:
        raise model_not_found(model)
    return serving.model_card(s.models[model])


@router.post("/completions", response_model=p.CompletionResponse)
async def completions(req: p.CompletionRequest, request: Request,
                      key: ApiKey = Depends(require_key)):
    return await serving.completions(state(request), Caller(key, request_id=request_id(request.scope)), req, request)


@router.post("/chat/completions", response_model=p.ChatCompletionResponse)
async def chat_completions(req: p.ChatCompletionRequest, request: Request,
                           key: ApiKey = Depends(require_key)):
    return await serving.chat_completions(state(request), Caller(key, request_id=request_id(request.scope)), req, request)


@router.post("/embeddings", response_model=p.EmbeddingResponse)
async def embeddings(req: p.EmbeddingRequest, key: ApiKey = Depends(require_key), s: serving.AppState = Depends(state)):
    return await serving.embeddings(s, Caller(key), req)
