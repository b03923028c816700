"""Running the app under uvicorn with connection hygiene: `run(app, settings)` is what `lmforge serve` calls.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`), connections (`limit_concurrency`) and the
size of an incomplete HTTP event, i.e. the request line and headers (`h11_max_incomplete_event_size`), but
it has no read timeouts: a client that sends its headers or body slowly (slowloris) holds a connection, and
a file descriptor, forever. `Protocol` (uvicorn's h11 protocol) adds them: headers must arrive within
`header_timeout_s` of the connection (or of the first byte of a later request on it), and each piece of a
body within `body_timeout_s` of the last. Refusals use the OpenAI error shape (408, 431, 503); repeated log
lines (a flood of refused connections, or accept() failing when descriptors run out) are rate-limited."""
from __future__ import annotations

import json
import logging
import resource
import time

import h11
import uvicorn
from uvicorn.protocols.http import h11_impl

from .settings import Settings

log = logging.getLogger(__name__)


def _error_bytes(status: int, message: str, code: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")], body


class Protocol(h11_impl.H11Protocol):
    """uvicorn's h11 protocol with header and body read timeouts and JSON refusals."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_header_bytes = 16 * 1024

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._too_big = False
        self._arm(self.header_timeout_s, self._headers_too_slow)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # h11 bounds only *incomplete* headers: bound complete ones too
            buffered = self.conn.trailing_data[0] + data
            end = buffered.find(b"\r\n\r\n")
            if end > self.max_header_bytes or (end < 0 and len(buffered) > self.max_header_bytes):
                self._too_big = True
                self.send_400_response("headers too large")
                return
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.trailing_data[0]:
            if self._timer is None:  # the first bytes of another request on a kept-alive connection
                self._arm(self.header_timeout_s, self._headers_too_slow)
        elif state is h11.SEND_BODY:
            self._arm(self.body_timeout_s, self._body_too_slow)  # each piece restarts the clock
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle time until the next request is uvicorn's keep-alive timeout

    def send_400_response(self, msg: str) -> None:
        status, message, code = (431, f"The request headers are larger than the server's limit of "
                                      f"{self.max_header_bytes} bytes.", "request_header_fields_too_large") \
            if self._too_big else (400, "The request is not valid HTTP.", "invalid_http")
        self._refuse(status, message, code)

    # ---------------------------------------------------------------------------------- internals

    def _arm(self, seconds: float, then) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.conn.trailing_data[0] or self.cycle is None:
                self._refuse(408, f"The request headers did not arrive within {self.header_timeout_s:g} s.",
                             "request_timeout")

    def _body_too_slow(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            # the app is already reading this body: closing tells it the client is gone (http.disconnect)
            self.transport.close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()
            return
        headers, body = _error_bytes(status, message, code)
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass
        self.transport.close()


async def _service_unavailable(scope, receive, send) -> None:
    """uvicorn's answer past `limit_concurrency` connections, in the OpenAI error shape."""
    headers, body = _error_bytes(503, "The server has too many open connections; retry shortly.", "server_overloaded")
    await send({"type": "http.response.start", "status": 503, "headers": headers + [(b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": body})


class RateLimitedLog(logging.Filter):
    """Let each distinct message template through at most once per `every` seconds (with a count of the
    ones held back), so a storm of refused connections cannot fill the log."""

    def __init__(self, every: float = 10.0):
        super().__init__()
        self.every = every
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last, held = self.seen.get(key, (0.0, 0))
        if now - last < self.every:
            self.seen[key] = (last, held + 1)
            return False
        if len(self.seen) > 1000:
            self.seen.clear()
        self.seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it)"
        if record.exc_info and held:
            record.exc_info = None  # one traceback per template and period is plenty
        return True


def config(app, settings: Settings) -> uvicorn.Config:
    protocol = type("Protocol", (Protocol,), {"header_timeout_s": settings.header_timeout_s,
                                              "body_timeout_s": settings.body_timeout_s,
                                              "max_header_bytes": settings.max_header_bytes})
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", http=protocol,
                          timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.max_connections,
                          h11_max_incomplete_event_size=settings.max_header_bytes, backlog=settings.max_connections,
                          timeout_graceful_shutdown=10)


def _more_descriptors(wanted: int) -> None:
    """Raise the soft file-descriptor limit toward the hard one, so max_connections can be reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted + 256)) if hard != resource.RLIM_INFINITY else max(soft, wanted + 256)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d", soft)


def run(app, settings: Settings) -> None:
    """Serve `app` until interrupted."""
    h11_impl.service_unavailable = _service_unavailable  # looked up at call time by uvicorn's protocol
    cfg = config(app, settings)  # configures uvicorn's logging: filter its handlers and the root's after it
    flood = RateLimitedLog()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(flood)
    _more_descriptors(settings.max_connections)
    uvicorn.Server(cfg).run()
