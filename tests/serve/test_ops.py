"""Operations: bounded metrics, an x-request-id on every answer, /metrics and /docs behind loopback or a key,
private files, an audit log that survives a torn last line, and /health naming a degraded component."""
import json
import os
import random
import stat

import httpx
import pytest

from lmforge.serve import Settings, create_app
from lmforge.serve.middleware import OpsGate

from lmforge.serve.served import serve_model

from .conftest import Server, free_port


def fresh(tiny_models):
    """The tiny GPT-2 as a new ServedModel (its own engine: stopping this server leaves the shared one alone)."""
    return [serve_model(tiny_models[0].model, tiny_models[0].tokenizer, "tiny-gpt2")]


def test_random_paths_do_not_grow_metrics(server, key):
    rng = random.Random(0)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = len(http.get("/metrics").content)
        for i in range(5000):
            path = "/v1/" + "".join(rng.choice("abcdefghij/") for _ in range(12))
            http.get(path) if i % 2 else http.post(path, json={})
        for i in range(50):
            http.get(f"/v1/models/nope-{i}", headers={"Authorization": f"Bearer {key}"})
        text = http.get("/metrics").text
    assert len(text.encode()) < 100_000, len(text)
    assert 'endpoint="unmatched"' in text and 'endpoint="/v1/models/{model:path}"' in text
    assert len(text.encode()) - before < 20_000


def test_every_response_has_a_request_id(server, key):
    with server.http(key) as http:
        ids = {http.get(path).headers["x-request-id"] for path in ("/v1/models", "/nope", "/health", "/metrics")}
        assert len(ids) == 4 and all(i.startswith("req_") for i in ids)
        r = http.post("/v1/completions", json={"model": "tiny-gpt2", "prompt": "the cat", "max_tokens": 2},
                      headers={"x-request-id": "client-chosen-1"})
        assert r.headers["x-request-id"] == "client-chosen-1"
        assert http.get("/v1/models", headers={"x-request-id": "bad id\u00e9".encode("latin-1") * 20}).headers["x-request-id"].startswith("req_")
        assert http.post("/v1/completions", content=b"{").headers["x-request-id"]
    records = [json.loads(line) for line in server.settings.audit_log.read_text().splitlines()]
    assert any(r.get("request_id") == "client-chosen-1" for r in records)


@pytest.mark.parametrize("access, client, key_ok, status", [
    ("loopback", "127.0.0.1", False, 200), ("loopback", "10.1.2.3", False, 401), ("loopback", "10.1.2.3", True, 200),
    ("key", "127.0.0.1", False, 401), ("key", "::1", True, 200), ("open", "10.1.2.3", False, 200)])
def test_metrics_and_docs_are_gated(server, key, access, client, key_ok, status):
    """The gate, driven with the scope a remote client would have."""
    import asyncio

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gate = OpsGate(app, access)
    sent = []
    headers = [(b"authorization", f"Bearer {key}".encode())] if key_ok else []
    for path in ("/metrics", "/docs", "/openapi.json"):
        scope = {"type": "http", "path": path, "client": (client, 5000), "headers": headers,
                 "app": type("A", (), {"state": type("S", (), {"lmforge": server.app_state})})()}

        async def send(m):
            sent.append(m)

        async def receive():
            return {"type": "http.request", "body": b""}

        asyncio.run(gate(scope, receive, send))
        assert sent[-2]["status"] == status
    # the real server, reached over loopback: open by default
    assert httpx.get(server.url + "/metrics").status_code == 200
    assert httpx.get(server.url + "/openapi.json").status_code == 200


def test_files_are_private(tmp_path, tiny_models):
    home = tmp_path / "home"
    settings = Settings(home=home, port=free_port())
    with Server(create_app(settings, fresh(tiny_models)), settings) as s:
        key = s.key("perm")
        s.http(key).post("/v1/completions", json={"model": "tiny-gpt2", "prompt": "the cat", "max_tokens": 2})
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(home) == 0o700
    assert mode(home / "lmforge.db") == 0o600 and mode(settings.audit_log) == 0o600
    for extra in ("lmforge.db-wal", "lmforge.db-shm"):
        if (home / extra).exists():
            assert mode(home / extra) & 0o077 == 0


def test_a_torn_audit_tail_is_cut_recorded_and_reported(tmp_path, tiny_models):
    home = tmp_path / "torn"
    settings = Settings(home=home, port=free_port())
    with Server(create_app(settings, fresh(tiny_models)), settings) as s:
        key = s.key("torn")
        body = {"model": "tiny-gpt2", "prompt": "the cat", "max_tokens": 2}
        assert s.http(key).post("/v1/completions", json=body).status_code == 200
        assert s.http().get("/health").json()["status"] == "ok"
    with open(settings.audit_log, "ab") as f:  # a crash mid-write
        f.write(b'{"seq": 1, "time": "2026-01-01T00:00:00+00:00", "event": "gener')
    with Server(create_app(settings, fresh(tiny_models)), settings) as s:
        health = s.http().get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert "torn" in health.json()["components"]["audit_log"]["detail"]
        assert s.http(key).post("/v1/completions", json=body).status_code == 200
        assert s.app_state.service.audit.verify().ok
        events = [json.loads(line)["event"] for line in settings.audit_log.read_text().splitlines()]
        assert events == ["generation", "audit_recovered", "generation"]
        os.chmod(settings.audit_log, 0o400)  # now it cannot be written at all
        try:
            if os.geteuid() != 0:
                s.http(key).post("/v1/completions", json=body)
                health = s.http().get("/health")
                assert health.status_code == 503 and health.json()["components"]["audit_log"]["status"] == "down"
        finally:
            os.chmod(settings.audit_log, 0o600)
