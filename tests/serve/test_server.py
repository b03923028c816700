"""Connection hygiene of `lmforge serve` (serve/server.py): slow headers answer 408, slow bodies and idle
kept-alive connections are closed, oversized headers answer 431, all in the OpenAI error shape."""
import json
import socket
import threading
import time

import pytest
import uvicorn

from lmforge.serve import Settings, create_app
from lmforge.serve.server import config

from .conftest import free_port


@pytest.fixture(scope="module")
def hygienic(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("hyg"), port=free_port(), header_timeout_s=0.5,
                        body_timeout_s=0.5, keep_alive_s=1, max_header_bytes=4096)
    server = uvicorn.Server(config(create_app(settings, []), settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    yield settings
    server.should_exit = True
    thread.join(timeout=10)


def connect(settings) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", settings.port), timeout=5)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        out += chunk
    return out


def status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_silent_and_slow_headers_answer_408(hygienic):
    with connect(hygienic) as s:  # says nothing
        start = time.time()
        status, error = status_and_error(read_all(s))
        assert status == 408 and error["code"] == "request_timeout" and time.time() - start < 3
    with connect(hygienic) as s:  # slowloris: a header line, then nothing more
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        status, _ = status_and_error(read_all(s))
        assert status == 408


def test_oversized_headers_answer_431(hygienic):
    with connect(hygienic) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        status, error = status_and_error(read_all(s))
    assert status == 431 and error["code"] == "request_header_fields_too_large"


def test_slow_bodies_and_idle_connections_are_closed(hygienic):
    with connect(hygienic) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"model\":")
        start = time.time()
        assert read_all(s) == b"" and time.time() - start < 3  # closed, nothing half-answered
    with connect(hygienic) as s:  # a normal request, then idle on keep-alive
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.time()
        raw = read_all(s)
        assert raw.startswith(b"HTTP/1.1 200") and time.time() - start < 3


def test_many_idle_sockets_are_all_closed(hygienic):
    sockets = [connect(hygienic) for _ in range(200)]
    time.sleep(1.5)
    closed = 0
    for s in sockets:
        s.settimeout(2)
        data = read_all(s)
        closed += data.startswith(b"HTTP/1.1 408") or data == b""
        s.close()
    assert closed == 200
