"""The one error shape, {"error": {message, type, param, code}}, and the handlers that guarantee it:
every failure, including validation, unknown routes and bugs, answers that shape and never a traceback."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ParamError(ValueError):
    """Raised inside request validation: `param` (relative to where it was raised) names the parameter, as
    data, so the 400 can carry it without parsing the message."""

    def __init__(self, param: str | None, message: str):
        super().__init__(message)
        self.param = param


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model '{name}' does not exist; GET /v1/models lists the models served here.",
                    param="model", code="model_not_found")


def _param(loc: tuple) -> str | None:
    """('body', 'messages', 0, 'content') -> 'messages[0].content'."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic tags union members with the type tried ('str', 'list[int]', ...); they are not parameter names
    parts = [p for p in parts if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float", "function-after")))]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first["type"] == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request: " + str(first.get("ctx", {}).get("error", "")),
                        code="invalid_json")
    if first["type"] == "missing" and tuple(first["loc"]) == ("body",):
        return APIError(400, "The request needs a JSON body.", code="invalid_json")
    param = _param(tuple(first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ParamError):
        rel = cause.param or ""
        param = (param + (rel if rel.startswith("[") else "." + rel)) if param and rel else (param or rel or None)
        return APIError(400, f"Invalid value for '{param}': {cause}." if param else f"Invalid request: {cause}.",
                        param=param, code="invalid_value")
    if first["type"] == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return APIError(400, f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"Unknown path {request.url.path}."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        return APIError(exc.status_code, message, code=None, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return APIError(500, "The server had an error while processing your request.", type="server_error").response()


class BodyLimit:
    """ASGI middleware: answer 413 for bodies over `limit` bytes, by Content-Length or by counting."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = APIError(413, f"The request body is larger than the server's limit of {self.limit} bytes.",
                           code="request_too_large")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_big.response()(scope, receive, send)
        # Read the body here (it is at most `limit` bytes) so an oversized one is refused before the app
        # parses anything; the app then reads the buffered messages.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.disconnect":
                return  # the client left (or was cut off as too slow) mid-body: nobody to answer
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await too_big.response()(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
