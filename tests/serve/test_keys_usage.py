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
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        server.client(key).completions.create(**COMPLETION)


def test_tokens_per_minute_limit(server):
    usage = server.client(server.key("tpm-probe")).completions.create(**COMPLETION).usage
    fresh_minute()
    # room for two requests (counted when they finish) and the third one's prompt minus one token
    key = server.key("tpm", tpm=2 * usage.total_tokens + usage.prompt_tokens - 1)
    with server.http(key) as http:
        assert http.post("/v1/completions", json=COMPLETION).status_code == 200
        assert http.post("/v1/completions", json=COMPLETION).status_code == 200
        r = http.post("/v1/completions", json=COMPLETION)
    assert r.status_code == 429 and r.json()["error"]["type"] == "tokens" and "retry-after" in r.headers


def test_exhausted_budget_answers_insufficient_quota(server):
    key = server.key("budget", budget_usd=0.000001)
    with server.http(key) as http:
        assert http.post("/v1/completions", json=COMPLETION).status_code == 200  # spends more than the budget
        r = http.post("/v1/completions", json=COMPLETION)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == r.json()["error"]["code"] == "insufficient_quota"
