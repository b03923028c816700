"""Keys are stored hashed and compared in constant time; usage and cost per key and model; limits."""
import hashlib
import secrets
import time

import httpx
import openai
import pytest
from sqlalchemy import select

from lmforge.serve import auth
from lmforge.serve.accounting import load_prices
from lmforge.store import ApiKey, Usage

COMPLETION = {"model": "tiny-gpt2", "prompt": "the cat", "max_tokens": 3, "logit_bias": {"0": -100}}


def test_keys_are_stored_as_digests_only(server):
    key = server.key("hashed")
    with server.db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == "hashed"))
        everything = " ".join(str(v) for r in s.scalars(select(ApiKey)) for v in vars(r).values())
    assert row.digest == hashlib.sha256(key.encode()).hexdigest()
    assert key not in everything and key[len(row.prefix):] not in everything


def test_keys_are_compared_with_compare_digest(server, monkeypatch):
    key = server.key("constant-time")
    calls, real = [], secrets.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.secrets, "compare_digest", spy)
    with server.http(key) as http:
        assert http.get("/v1/models").status_code == 200
    assert calls and all(len(a) == len(b) == 64 for a, b in calls)  # digests, never the raw key


def test_revoked_key_is_refused(server):
    key = server.key("to-revoke")
    with server.http(key) as http:
        assert http.get("/v1/models").status_code == 200
        auth.revoke_key(server.db, "to-revoke")
        assert http.get("/v1/models").status_code == 401


def test_usage_and_cost_per_key_and_model_and_isolation(server):
    a, b = server.key("alice"), server.key("bob")
    client_a = server.client(a)
    r1 = client_a.completions.create(**COMPLETION)
    r2 = client_a.chat.completions.create(model="tiny-t5", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    server.client(b).completions.create(**COMPLETION)
    report = httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {a}"}).json()
    assert report["key"] == "alice"
    rows = {r["model"]: r for r in report["data"]}
    assert set(rows) == {"tiny-gpt2", "tiny-t5"}  # bob's request is not in alice's report
    assert rows["tiny-gpt2"]["requests"] == 1
    assert rows["tiny-gpt2"]["prompt_tokens"] == r1.usage.prompt_tokens
    assert rows["tiny-gpt2"]["completion_tokens"] == r1.usage.completion_tokens
    assert rows["tiny-t5"]["completion_tokens"] == r2.usage.completion_tokens
    price = load_prices().default  # the tiny models are not in the table: default prices
    expected = (r1.usage.prompt_tokens * price.prompt + r1.usage.completion_tokens * price.completion) / 1000
    assert rows["tiny-gpt2"]["cost_usd"] == pytest.approx(expected)
    assert report["total_cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows.values()))
    bob = httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {b}"}).json()
    assert bob["key"] == "bob" and [r["requests"] for r in bob["data"]] == [1]
    future = httpx.get(server.url + "/v1/usage?start=2999-01-01", headers={"Authorization": f"Bearer {a}"}).json()
    assert future["data"] == []


def test_streamed_usage_is_recorded(server):
    key = server.key("streamer")
    chunks = list(server.client(key).completions.create(stream=True, **{**COMPLETION, "max_tokens": 5}))
    with server.db.session() as s:
        row = s.scalar(select(Usage).join(ApiKey).where(ApiKey.name == "streamer"))
    assert row.completion_tokens == 5 and len(chunks) >= 1


def fresh_minute():
    """Limits count per clock minute: start a limit test early in a minute so it does not straddle two."""
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)


def test_requests_per_minute_limit_answers_429_with_retry_after(server):
    fresh_minute()
    key = server.key("rpm", rpm=2)
    with server.http(key) as http:
        assert [http.get("/v1/models").status_code for _ in range(2)] == [200, 200]
        assert http.post("/v1/completions", json=COMPLETION).status_code == 200  # models listing is not limited
        r = http.post("/v1/completions", json=COMPLETION)
        r = http.post("/v1/completions", json=COMPLETION) if r.status_code == 200 else r
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 120  # sliding window: the minute just counted decays over the next
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        server.client(key).completions.create(**COMPLETION)


def test_tokens_per_minute_reserve_max_tokens_up_front(server):
    usage = server.client(server.key("tpm-probe")).completions.create(**COMPLETION).usage
    fresh_minute()
    # room for two requests' prompt + max_tokens (reserved at admission), not three
    per_request = usage.prompt_tokens + COMPLETION["max_tokens"]
    key = server.key("tpm", tpm=3 * per_request - 1)
    with server.http(key) as http:
        first = http.post("/v1/completions", json=COMPLETION)
        assert first.status_code == 200
        assert int(first.headers["x-ratelimit-limit-tokens"]) == 3 * per_request - 1
        assert int(first.headers["x-ratelimit-remaining-tokens"]) == 2 * per_request - 1
        assert first.headers["x-ratelimit-reset-tokens"].endswith("s")
        assert http.post("/v1/completions", json=COMPLETION).status_code == 200
        r = http.post("/v1/completions", json=COMPLETION)
        if usage.completion_tokens < COMPLETION["max_tokens"]:  # what was not used was given back
            assert r.status_code == 200
            r = http.post("/v1/completions", json=COMPLETION)
    assert r.status_code == 429 and r.json()["error"]["type"] == "tokens" and "retry-after" in r.headers


def test_a_burst_over_tpm_is_refused_before_generating(server):
    """Requests arriving together: each reserves its prompt and max_tokens, so only those that fit run."""
    from concurrent.futures import ThreadPoolExecutor

    fresh_minute()
    body = {**COMPLETION, "max_tokens": 10}
    prompt_tokens = server.client(server.key("burst-probe")).completions.create(**body).usage.prompt_tokens
    tpm = 3 * (prompt_tokens + 10) + 5
    key = server.key("burst", tpm=tpm)
    engine = server.app_state.models["tiny-gpt2"].engine
    with server.http(key) as http, ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: http.post("/v1/completions", json=body).status_code, range(12)))
    assert sorted(statuses) == [200] * 3 + [429] * 9
    with server.db.session() as s:
        rows = s.scalars(select(Usage).join(ApiKey).where(ApiKey.name == "burst")).all()
    assert len(rows) == 3 and sum(r.prompt_tokens + r.completion_tokens for r in rows) <= tpm  # never overshoots
    assert engine.queued == (0, 0)


def test_budget_reserves_the_most_a_request_can_cost(server):
    price = load_prices().default
    probe = server.client(server.key("budget-probe")).completions.create(**COMPLETION).usage
    most = (probe.prompt_tokens * price.prompt + COMPLETION["max_tokens"] * price.completion) / 1000
    key = server.key("budget", budget_usd=most * 1.5)  # one request's worst case fits, two do not
    with server.http(key) as http:
        assert http.post("/v1/completions", json=COMPLETION).status_code == 200
        r = http.post("/v1/completions", json={**COMPLETION, "max_tokens": 40})
        assert r.status_code == 429 and r.json()["error"]["type"] == r.json()["error"]["code"] == "insufficient_quota"
        assert "max_tokens" in r.json()["error"]["message"]
    with server.db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == "budget"))
        spent = sum(u.cost_usd for u in s.scalars(select(Usage).where(Usage.key_id == row.id)))
    assert row.spent_usd == pytest.approx(spent)  # the reservation was settled to what was used
