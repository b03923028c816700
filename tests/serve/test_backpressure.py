"""Backpressure and fairness: a client that goes away stops its generation within a step (streaming or not)
and is billed for what was made; a full queue answers 503 with Retry-After at once; prompts x n is capped;
a request past its deadline is stopped; every ended stream is recorded in usage."""
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from lmforge.store import ApiKey, Usage

BODY = {"model": "tiny-gpt2", "prompt": "the cat", "max_tokens": 50, "logit_bias": {"0": -100}, "temperature": 0}
STEP_S = 0.04


@pytest.fixture
def slow_engine(server):
    """The tiny model's engine, slowed to STEP_S a decoding step (restored afterwards)."""
    engine = server.app_state.models["tiny-gpt2"].engine
    real = engine.batcher.step

    def step():
        time.sleep(STEP_S)
        return real()

    engine.batcher.step = step
    yield engine
    engine.batcher.step = real


def usage_of(server, name: str) -> list[Usage]:
    with server.db.session() as s:
        return list(s.scalars(select(Usage).join(ApiKey).where(ApiKey.name == name)))


def wait_idle(engine, timeout=5.0) -> None:
    deadline = time.time() + timeout
    while (engine.batcher.has_work or engine._running) and time.time() < deadline:
        time.sleep(0.005)


def test_a_disconnecting_stream_stops_within_a_step_and_is_billed_for_what_it_made(server, slow_engine):
    key = server.key("leaver-stream")
    received = 0
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json={**BODY, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    received += 1
                    if received == 5:
                        break
            steps_at_close = slow_engine.steps
    wait_idle(slow_engine)
    assert slow_engine.steps - steps_at_close <= 2  # the step running when it left, and at most one more
    time.sleep(0.2)
    [row] = usage_of(server, "leaver-stream")
    assert received <= row.completion_tokens <= received + 3 < BODY["max_tokens"]


def test_a_disconnecting_non_streamed_request_stops_too(server, slow_engine):
    key = server.key("leaver-json")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=0.4) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=BODY)
        left_at = slow_engine.steps
    wait_idle(slow_engine)
    assert slow_engine.steps - left_at <= 2
    time.sleep(0.2)
    [row] = usage_of(server, "leaver-json")
    assert 1 <= row.completion_tokens < BODY["max_tokens"] / 2  # billed only for what was generated


def test_a_full_queue_answers_503_with_retry_after_at_once(server, slow_engine):
    from lmforge.serve.engine import QueueLimits

    key = server.key("crowd")
    real, slow_engine.limits = slow_engine.limits, QueueLimits(requests=2, tokens=10_000, wait_s=30)
    slow_engine.max_rows, max_rows = 1, slow_engine.max_rows  # one row at a time: the others queue
    statuses, times = [], []

    def one():
        start = time.perf_counter()
        r = httpx.post(server.url + "/v1/completions", json={**BODY, "max_tokens": 10},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
        statuses.append((r.status_code, r.headers.get("retry-after"), r.json().get("error", {}).get("code")))
        times.append((r.status_code, time.perf_counter() - start))

    try:
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
            time.sleep(0.01)
        for t in threads:
            t.join()
    finally:
        slow_engine.limits, slow_engine.max_rows = real, max_rows
    refused = [s for s in statuses if s[0] == 503]
    assert refused and all(int(retry) >= 1 and code == "server_overloaded" for _, retry, code in refused)
    assert sum(1 for s in statuses if s[0] == 200) >= 3  # one running and two waiting were served
    assert max(t for status, t in times if status == 503) < 1.0  # refused at once, not after queueing
    assert slow_engine.queued == (0, 0)


def test_waiting_past_the_queue_deadline_answers_503(server, slow_engine):
    from lmforge.serve.engine import QueueLimits

    key = server.key("patient")
    real, slow_engine.limits = slow_engine.limits, QueueLimits(requests=100, tokens=100_000, wait_s=0.2)
    slow_engine.max_rows, max_rows = 1, slow_engine.max_rows
    results = []

    def one():
        r = httpx.post(server.url + "/v1/completions", json={**BODY, "max_tokens": 20},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
        results.append(r.status_code)

    try:
        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        slow_engine.limits, slow_engine.max_rows = real, max_rows
    assert sorted(results)[0] == 200 and 503 in results


def test_prompts_times_n_is_capped(server, key):
    with server.http(key) as http:
        r = http.post("/v1/completions", json={**BODY, "prompt": ["a"] * 9, "n": 8, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "72" in r.json()["error"]["message"]


def test_a_request_past_its_deadline_is_stopped(server, slow_engine):
    key = server.key("slowpoke")
    settings = server.app_state.settings
    real, settings.request_timeout_s = settings.request_timeout_s, 0.3
    try:
        with server.http(key) as http:
            r = http.post("/v1/completions", json=BODY)
            s = http.post("/v1/completions", json={**BODY, "stream": True})
    finally:
        settings.request_timeout_s = real
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert '"code": "timeout"' in s.text and "[DONE]" not in s.text
    time.sleep(0.2)
    rows = usage_of(server, "slowpoke")
    assert len(rows) == 2 and all(0 < u.completion_tokens < BODY["max_tokens"] for u in rows)


def test_every_ended_stream_is_recorded(server):
    """Streams closed at random points: each one is in usage."""
    key = server.key("closers")
    n = 12
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for i in range(n):
            with http.stream("POST", "/v1/completions", json={**BODY, "max_tokens": 20, "stream": True}) as r:
                for j, line in enumerate(r.iter_lines()):
                    if j >= i:
                        break
    deadline = time.time() + 5
    while len(usage_of(server, "closers")) < n and time.time() < deadline:
        time.sleep(0.05)
    assert len(usage_of(server, "closers")) == n


def test_over_the_concurrency_limit_is_refused_before_any_work(server, key):
    service = server.app_state.service
    settings = server.app_state.settings
    real, settings.max_concurrent_requests = settings.max_concurrent_requests, service.in_flight
    try:
        with server.http(key) as http:
            r = http.post("/v1/completions", json={**BODY, "max_tokens": 2})
    finally:
        settings.max_concurrent_requests = real
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "server_overloaded"
    assert service.in_flight == 0
