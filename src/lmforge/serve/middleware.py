"""ASGI middleware of the API app, outermost first:

* `RequestContext`: an `x-request-id` on every response (the client's own, when it sent a sane one, else a
  new one), kept in the scope for the audit record; and the request counters and latency, labelled by
  *route template* (`/v1/models/{model:path}`), never by raw path, so no client can grow /metrics or memory
  by asking for random paths (unmatched paths share one label).
* `Overload`: generation requests past `max_concurrent_requests` answer 503 before authentication, parsing
  or anything that needs a worker thread: under overload those threads are the queue, so a refusal that
  waited for one would come late.
* `OpsGate`: /metrics and the API documentation (/docs, /redoc, /openapi.json) answer loopback clients and,
  from anywhere else, only a valid API key (`LMFORGE_OPS_ACCESS`: `loopback`, `key` or `open`).
"""
from __future__ import annotations

import ipaddress
import re
import time
import uuid

from fastapi.concurrency import run_in_threadpool

from .errors import APIError

REQUEST_ID = "lmforge.request_id"  # the scope key routes read it from
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
OPS_PATHS = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def request_id(scope) -> str | None:
    return scope.get(REQUEST_ID)


class RequestContext:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        rid = scope[REQUEST_ID] = given if _SANE_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"
        start, status = time.perf_counter(), 500

        async def stamped(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            state = getattr(scope["app"].state, "lmforge", None) if "app" in scope else None
            if state is not None:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or "unmatched"
                state.metrics.requests.labels(endpoint, str(status)).inc()
                state.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpsGate:
    def __init__(self, app, access: str):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in OPS_PATHS or self.access == "open":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        if self.access == "loopback" and is_loopback(client[0] if client else None):
            return await self.app(scope, receive, send)
        from .auth import find_key

        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        state = getattr(scope["app"].state, "lmforge", None)
        if scheme.lower() == "bearer" and token.strip() and state is not None \
                and await run_in_threadpool(find_key, state.db, token.strip()) is not None:
            return await self.app(scope, receive, send)
        error = APIError(401, f"{scope['path']} needs an API key from clients outside this machine: send "
                              "'Authorization: Bearer YOUR_KEY' (or set LMFORGE_OPS_ACCESS).", code="missing_api_key")
        await error.response()(scope, receive, send)


GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/studio/playground/run"})


class Overload:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in GENERATION_PATHS:
            state = getattr(scope["app"].state, "lmforge", None)
            if state is not None and state.service is not None \
                    and state.service.in_flight >= state.settings.max_concurrent_requests:
                error = APIError(503, f"The server is busy ({state.service.in_flight} requests in progress); "
                                      "retry shortly.", type="server_error", code="server_overloaded",
                                 headers={"Retry-After": "1"})
                await _drain(receive, state.settings.max_body_bytes)  # so the connection can be reused
                return await error.response()(scope, receive, send)
        return await self.app(scope, receive, send)


async def _drain(receive, limit: int) -> None:
    """Read (and drop) a request body of at most `limit` bytes."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
