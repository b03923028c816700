"""Liveness with each component's state, and Prometheus metrics (/metrics: open to loopback clients, a key
from elsewhere; see middleware.OpsGate).

/health answers `status` ok, degraded (serving, but an operator should look: e.g. the audit log had a torn
last line cut off) or down (503: the database cannot be reached, an engine thread died, or the audit log
cannot be written, so generations could not be recorded), with one entry per component."""
from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

router = APIRouter(tags=["health"])


def _database(db) -> dict:
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
        return {"status": "ok"}
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return {"status": "down", "detail": f"the database cannot be reached ({type(e).__name__})"}


def _audit(service) -> dict:
    log = service.audit
    folder = log.path.parent
    writable = os.access(log.path, os.W_OK) if log.path.exists() else os.access(folder, os.W_OK) or not folder.exists()
    if service.audit_error or not writable:
        return {"status": "down", "detail": service.audit_error or f"{log.path} is not writable"}
    if log.recovered:
        return {"status": "degraded", "detail": f"a torn last line ({log.recovered['dropped_bytes']} bytes) was cut "
                                                f"off at {log.recovered['at']} and recorded in the log"}
    return {"status": "ok"}


@router.get("/health")
async def health(request: Request):
    s = request.app.state.lmforge
    components = {"database": await run_in_threadpool(_database, s.db), "audit_log": _audit(s.service)}
    for name, m in s.models.items():
        if m.engine is not None:
            alive = m.engine._thread.is_alive()
            components[f"engine:{name}"] = {"status": "ok"} if alive else {"status": "down", "detail": "stopped"}
    states = {c["status"] for c in components.values()}
    status = "down" if "down" in states else "degraded" if "degraded" in states else "ok"
    return JSONResponse({"status": status, "models": sorted(s.models), "components": components},
                        status_code=503 if status == "down" else 200)


@router.get("/metrics")
def metrics(request: Request):
    return Response(generate_latest(request.app.state.lmforge.metrics.registry), media_type=CONTENT_TYPE_LATEST)
