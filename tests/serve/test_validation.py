"""Every input the schema admits is checked before any work: invalid Unicode, out-of-range integers and
times, and loose types answer 400 in OpenAI's error shape, with the parameter as data."""
import json

import pytest

from .test_errors import CHAT, COMPLETION, error

SURROGATE = '"\\ud800"'  # valid JSON, not encodable text


def raw(body: dict, field_path: list, value_json: str) -> bytes:
    """`body` as JSON with the value at `field_path` replaced by the raw JSON text `value_json`."""
    marker = "__RAW__"
    target = body = json.loads(json.dumps(body))
    for k in field_path[:-1]:
        target = target[k]
    target[field_path[-1]] = marker
    return json.dumps(body).replace(f'"{marker}"', value_json).encode()


@pytest.mark.parametrize("path, body, where, param", [
    ("/v1/completions", COMPLETION, ["prompt"], "prompt"),
    ("/v1/chat/completions", CHAT, ["messages", 0, "content"], "messages[0].content"),
    ("/v1/chat/completions", CHAT, ["user"], "user"),
    ("/v1/completions", {**COMPLETION, "stop": ["x"]}, ["stop", 0], "stop[0]"),
    ("/v1/completions", {**COMPLETION, "metadata": {"a": 1}}, ["metadata", "a"], "metadata.a"),  # unknown field too
    ("/v1/embeddings", {"model": "tiny-bert", "input": "x"}, ["input"], "input"),
    ("/v1/moderations", {"input": "x"}, ["input"], "input"),
    ("/v1/watermark/detect", {"model": "tiny-gpt2", "text": "x"}, ["text"], "text"),
])
def test_lone_surrogates_are_400(server, key, path, body, where, param):
    with server.http(key) as http:
        r = http.post(path, content=raw(body, where, SURROGATE), headers={"content-type": "application/json"})
        e = error(r, 400, param, "invalid_value")
        assert "Unicode" in e["message"]
        # a proper surrogate pair (an emoji) is fine
        ok = http.post(path, content=raw(body, where, '"\\ud83d\\ude00"'), headers={"content-type": "application/json"})
        assert ok.status_code != 500 and (ok.status_code < 400 or ok.json()["error"]["param"] != param)


@pytest.mark.parametrize("path, body, status, param", [
    ("/v1/completions", {**COMPLETION, "seed": 2**70}, 400, "seed"),
    ("/v1/completions", {**COMPLETION, "seed": -(2**64)}, 400, "seed"),
    ("/v1/completions", {**COMPLETION, "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {**COMPLETION, "max_tokens": "3"}, 400, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 3.5}, 400, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "n": True}, 400, "n"),
    ("/v1/completions", {**COMPLETION, "temperature": "0.5"}, 400, "temperature"),
    ("/v1/chat/completions", {**CHAT, "logprobs": 1}, 400, "logprobs"),
    ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": "true"}}, 400,
     "stream_options.include_usage"),
    ("/v1/completions", {**COMPLETION, "prompt": [1, "a"]}, 400, "prompt"),  # a union: the field, not a member
    ("/v1/completions", {**COMPLETION, "num_beams": 2, "length_penalty": -1e10}, 400, "length_penalty"),
])
def test_ranges_and_strict_types(server, key, path, body, status, param):
    with server.http(key) as http:
        error(http.post(path, json=body), status, param, "invalid_value")


def test_big_seeds_within_64_bits_work(server, key):
    with server.http(key) as http:
        for seed in (2**64 - 1, -(2**63)):
            r = http.post("/v1/completions", json={**COMPLETION, "seed": seed, "max_tokens": 2})
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("query, param", [("start=1e20", "start"), ("start=100000000000000000000", "start"),
                                          ("end=99999999999999", "end"), ("start=nan", "start"),
                                          ("start=0001-01-01T00:00:00%2B14:00", "start")])
def test_usage_times_out_of_range_are_400(server, key, query, param):
    with server.http(key) as http:
        error(http.get(f"/v1/usage?{query}"), 400, param, "invalid_value")
        assert http.get("/v1/usage?start=0&end=253402300799").status_code == 200
