"""Liveness and Prometheus metrics (unauthenticated, as scrapers expect; bind to a private address)."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/health")
def health(request: Request):
    s = request.app.state.lmforge
    return {"status": "ok", "models": sorted(s.models)}


@router.get("/metrics")
def metrics(request: Request):
    return Response(generate_latest(request.app.state.lmforge.metrics.registry), media_type=CONTENT_TYPE_LATEST)
