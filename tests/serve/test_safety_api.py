"""The safety layer of the API: watermarked generation and POST /v1/watermark/detect, filter policies per key
(input blocked with content_policy_violation, output with finish_reason content_filter, PII redacted from
completions, streams held back), the audit record of every generation (redacted), blocked counts in /v1/usage."""
import json

import httpx
import openai
import pytest

from lmforge.safety.filters import FilterPolicy
from lmforge.serve import Settings, create_app
from lmforge.serve.auth import create_key
from lmforge.serve.served import load_served

from .conftest import Server, free_port

ABUSE = "you stupid idiot, fuck off"  # the shipped moderation model scores harassment 0.99
EVERYTHING = {"actions": "block", "thresholds": {"hate": 0.0, "harassment": 0.0}}  # every output fires


def key_with(server, name, **policy) -> str:
    return create_key(server.db, name, policy=FilterPolicy.from_dict(policy))[1]


def audit_records(server) -> list[dict]:
    return [json.loads(line) for line in server.settings.audit_log.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def wm_server(tmp_path_factory):
    """The bundled demo GPT-2 (trained, so its text re-tokenizes to the ids it generated, which a random
    model's does not) behind a server with the default watermark settings (gamma 0.25, delta 2)."""
    settings = Settings(home=tmp_path_factory.mktemp("wm"), port=free_port(), watermark_key="test-watermark-secret")
    with Server(create_app(settings, [load_served("demo-gpt2")]), settings) as s:
        yield s


def detect(server, key, text, **extra):
    return server.http(key).post("/v1/watermark/detect", json={"text": text, "model": "demo-gpt2", **extra})


def sample(client, n, **extra):
    r = client.completions.create(model="demo-gpt2", prompt="The king said", max_tokens=100, temperature=1.0, n=n,
                                  seed=1, logit_bias={"0": -100}, **extra)  # no early end-of-text
    assert all(c.finish_reason == "length" for c in r.choices)
    return [c.text for c in r.choices]


def test_watermarked_generations_are_detected_and_plain_ones_are_not(wm_server):
    marked = wm_server.client(key_with(wm_server, "wm-policy", watermark=True))
    plain_key = wm_server.key("wm-plain")
    plain = wm_server.client(plain_key)
    for text in sample(marked, 4) + sample(plain, 2, extra_body={"watermark": True}):
        d = detect(wm_server, plain_key, text).json()
        assert d["z_score"] > 4 and d["is_watermarked"] and d["p_value"] < 1e-4, d
        assert d["key_id"] == "default" and d["gamma"] == 0.25
    for text in sample(plain, 4):
        d = detect(wm_server, plain_key, text).json()
        assert d["z_score"] < 4 and not d["is_watermarked"], d
    assert detect(wm_server, plain_key, text, gamma=0.5).json()["gamma"] == 0.5
    records = [r for r in audit_records(wm_server) if r["watermark"]]
    assert len(records) == 2 and records[0]["watermark"] == {"key_id": "default", "gamma": 0.25, "delta": 2.0}


def test_watermark_detect_answers_bad_input_clearly(wm_server, server, key):
    key = wm_server.key("wm-errors")
    cases = [({"text": "   "}, 400, "text"), ({"text": "the cat", "gamma": 1.5}, 400, "gamma"),
             ({"text": "the cat", "key_id": "old"}, 400, "key_id"), ({"text": "a"}, 400, "text"),
             ({"text": "the cat", "model": "nope"}, 404, "model")]
    for body, status, param in cases:
        r = wm_server.http(key).post("/v1/watermark/detect", json={"model": "demo-gpt2", **body})
        assert r.status_code == status and r.json()["error"]["param"] == param, (body, r.json())
    r = wm_server.http(key).post("/v1/watermark/detect", json={"model": "demo-gpt2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
    assert wm_server.http().post("/v1/watermark/detect", json={"text": "x", "model": "demo-gpt2"}).status_code == 401
    # a server without a watermark secret says so, for detection and for generation
    off = server.http(key_with(server, "wm-off", watermark=True))
    r = off.post("/v1/watermark/detect", json={"text": "the cat sat", "model": "tiny-gpt2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "watermark_unavailable"
    r = off.post("/v1/completions", json={"model": "tiny-gpt2", "prompt": "the cat", "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "watermark"


def test_blocked_input_is_refused_with_the_policys_message(server):
    key = key_with(server, "strict-in", input={"actions": {"harassment": "block"}}, refusal_message="Not here.")
    client = server.client(key)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": ABUSE}], max_tokens=3)
    assert e.value.code == "content_policy_violation" and e.value.body["message"] == "Not here."
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-gpt2", prompt=["the cat", ABUSE], max_tokens=3)
    ok = client.completions.create(model="tiny-gpt2", prompt="the cat sat", max_tokens=3)  # harmless: served
    assert ok.choices[0].finish_reason in ("stop", "length")
    report = server.http(key).get("/v1/usage").json()
    assert sum(d["blocked"] for d in report["safety"]) == 2 and report["safety"][0]["flagged"] == 0


def test_flagged_input_is_served_and_counted(server):
    key = server.key("default-policy")  # no policy: flag only
    r = server.http(key).post("/v1/completions", json={"model": "tiny-gpt2", "prompt": ABUSE, "max_tokens": 2})
    assert r.status_code == 200 and r.headers["x-lmforge-moderation"].startswith("input=flag")
    assert [d["flagged"] >= 1 for d in server.http(key).get("/v1/usage").json()["safety"]] == [True]


def test_blocked_output_ends_with_content_filter(server):
    client = server.client(key_with(server, "strict-out", input=None, output=EVERYTHING))
    r = client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                       n=2, logprobs=True)
    assert [(c.finish_reason, c.message.content, c.logprobs) for c in r.choices] == [("content_filter", "", None)] * 2
    assert r.usage.completion_tokens > 0  # generated (and billed), then withheld
    stream = client.completions.create(model="tiny-gpt2", prompt="the cat", max_tokens=4, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ""
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["content_filter"]
    assert all(c.usage is None for c in chunks)  # the usage chunk the guard asked for is not passed on


def test_pii_in_completions_is_redacted_when_the_policy_says_so(server):
    prompt = "mail bob@example.com, call (415) 555-2671 now"
    redacting = server.client(key_with(server, "redact-out", redact_output=True))
    r = redacting.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=3, echo=True, logprobs=1)
    assert r.choices[0].text.startswith("mail [EMAIL], call [PHONE] now") and r.choices[0].logprobs is None
    stream = redacting.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=3, echo=True, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices).startswith("mail [EMAIL], call [PHONE] now")
    plain = server.client(server.key("no-redact")).completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=3,
                                                                      echo=True)
    assert plain.choices[0].text.startswith(prompt)


def test_audit_records_every_generation_without_the_pii(server):
    key = server.key("audited")
    client = server.client(key)
    secret = "jane@example.org, 415-555-2671."
    r = client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": secret}], max_tokens=3,
                                       temperature=0.5)
    s = client.completions.create(model="tiny-gpt2", prompt=secret, max_tokens=3, stream=True,
                                  stream_options={"include_usage": True})
    usage = [c.usage for c in s if c.usage][0]
    raw = server.settings.audit_log.read_text(encoding="utf-8")
    assert "jane@example.org" not in raw and "555-2671" not in raw
    mine = [rec for rec in audit_records(server) if rec["key_id"] == key[:12]]
    assert len(mine) == 2
    chat, stream = mine
    assert chat["prompt"] == "[EMAIL], [PHONE]." and chat["model"] == "tiny-gpt2"
    assert (chat["prompt_tokens"], chat["completion_tokens"]) == (r.usage.prompt_tokens, r.usage.completion_tokens)
    assert chat["params"]["temperature"] == 0.5 and chat["moderation"]["input"]["action"] == "allow"
    assert (stream["prompt_tokens"], stream["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert stream["params"]["stream"] is True and len(stream["completion"]) == 1
    assert key not in raw


def test_usage_safety_counts_are_per_key(server):
    key = server.key("clean")
    assert httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()["safety"] == []
