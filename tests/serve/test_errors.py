"""Bad input answers the right status with an OpenAI error object naming the parameter, never a traceback,
and the server keeps serving."""
import pytest


def error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and body["error"]["message"]
    assert body["error"]["param"] == param
    if code:
        assert body["error"]["code"] == code
    return body["error"]


CHAT = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "tiny-gpt2", "prompt": "the cat"}


@pytest.mark.parametrize("path, body, status, param, code", [
    ("/v1/chat/completions", {**CHAT, "model": "nope"}, 404, "model", "model_not_found"),
    ("/v1/completions", {**COMPLETION, "model": "nope"}, 404, "model", "model_not_found"),
    ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model", "model_not_found"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages", "invalid_value"),
    ("/v1/chat/completions", {"model": "tiny-gpt2"}, 400, "messages", "missing_required_parameter"),
    ("/v1/chat/completions", {**CHAT, "temperature": 2.5}, 400, "temperature", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "temperature": -0.1}, 400, "temperature", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "top_p": 0}, 400, "top_p", "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "top_p": 1.5}, 400, "top_p", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 64}, 400, "max_tokens", "context_length_exceeded"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 1000}, 400, "max_tokens", "context_length_exceeded"),
    ("/v1/completions", {**COMPLETION, "prompt": "the cat " * 40}, 400, "prompt", "context_length_exceeded"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "the cat " * 40}]}, 400, "messages",
     "context_length_exceeded"),
    ("/v1/completions", {**COMPLETION, "n": 0}, 400, "n", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "logit_bias": {"99999": 5}}, 400, "logit_bias", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "logit_bias": {"3": 500}}, 400, "logit_bias", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "presence_penalty": 3}, 400, "presence_penalty", "invalid_value"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role",
     "invalid_value"),
    ("/v1/completions", {"model": "tiny-bert", "prompt": "x"}, 400, "model", "wrong_model_kind"),
    ("/v1/embeddings", {"model": "tiny-gpt2", "input": "x"}, 400, "model", "wrong_model_kind"),
    ("/v1/embeddings", {"model": "tiny-bert", "input": []}, 400, "input", "invalid_value"),
    ("/v1/completions", {**COMPLETION, "prompt": []}, 400, "prompt", "invalid_value"),
])
def test_bad_parameters(server, key, path, body, status, param, code):
    with server.http(key) as http:
        error(http.post(path, json=body), status, param, code)


def test_malformed_json_and_missing_body(server, key):
    with server.http(key) as http:
        e = error(http.post("/v1/chat/completions", content=b'{"model": "tiny-gpt2", "messages": [',
                            headers={"content-type": "application/json"}), 400, code="invalid_json")
        assert "JSON" in e["message"]
        error(http.post("/v1/completions"), 400, code="invalid_json")


def test_body_over_the_limit_is_413(server, key):
    big = {**COMPLETION, "prompt": "x" * 30_000}  # the test server's limit is 20 kB
    with server.http(key) as http:
        error(http.post("/v1/completions", json=big), 413, code="request_too_large")
        chunks = (b"x" * 10_000 for _ in range(3))  # no Content-Length: counted while reading
        error(http.post("/v1/completions", content=chunks, headers={"content-type": "application/json"}), 413,
              code="request_too_large")


def test_missing_and_wrong_keys_are_401(server, key):
    with server.http() as http:
        error(http.post("/v1/completions", json=COMPLETION), 401, code="missing_api_key")
        error(http.get("/v1/models"), 401, code="missing_api_key")
        error(http.post("/v1/completions", json=COMPLETION, headers={"Authorization": "Bearer lmf-nothing-real"}),
              401, code="invalid_api_key")
        error(http.post("/v1/completions", json=COMPLETION, headers={"Authorization": key}), 401,
              code="missing_api_key")  # no "Bearer"


def test_unknown_route_and_method(server, key):
    with server.http(key) as http:
        error(http.get("/v1/nothing"), 404)
        error(http.get("/v1/completions"), 405)


def test_server_keeps_serving_after_errors(server, key):
    with server.http(key) as http:
        for _ in range(3):
            http.post("/v1/completions", content=b"{", headers={"content-type": "application/json"})
            http.post("/v1/completions", json={**COMPLETION, "temperature": 9})
        ok = http.post("/v1/completions", json={**COMPLETION, "max_tokens": 3})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_openai_client_raises_typed_errors(server, key):
    import openai

    client = server.client(key)
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x")
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-gpt2", messages=[], max_tokens=2)
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.AuthenticationError):
        server.client("lmf-wrong-key").models.list()
