"""The playground (streamed through the same serving code as /v1, priced, on a workspace key) and the keys
and usage pages."""
import json

from .conftest import Browser, make_client


def sse(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_playground_streams_counts_and_prices(home, tiny_gpt2):
    with make_client(home, [tiny_gpt2]) as c:
        b = Browser(c, "alice")
        page = b.get("/studio/playground").text
        assert "tiny-gpt2" in page and "View code" in page
        r = b.json("/studio/playground/run", {"model": "tiny-gpt2", "mode": "chat", "temperature": 0.7, "top_p": 0.9,
                                              "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = sse(r.text)
        assert r.text.rstrip().endswith("data: [DONE]")
        usage = chunks[-1]["usage"]
        assert usage["completion_tokens"] <= 5 and usage["prompt_tokens"] > 0
        r = b.json("/studio/playground/run", {"model": "tiny-gpt2", "mode": "completion", "prompt": "the cat",
                                              "max_tokens": 3, "temperature": 0, "stop": ["zz"]})
        assert sse(r.text)[-1]["usage"]["completion_tokens"] <= 3
        bad = b.json("/studio/playground/run", {"model": "tiny-gpt2", "mode": "chat", "temperature": 5,
                                                "messages": [{"role": "user", "content": "x"}]})
        assert bad.status_code == 400 and "temperature" in bad.json()["error"]["message"]
        assert c.post("/studio/playground/run", json={"model": "tiny-gpt2"}).status_code == 403  # no CSRF header
        keys = b.get("/studio/keys").text
        assert "(studio playground)" in keys and "tiny-gpt2" in keys.split('id="usage"')[1]
        # the usage table has the two runs on the playground key
        row = keys.split('id="usage"')[1].split("tiny-gpt2</td><td>")[1]
        assert row.startswith("2<")


def test_keys_are_shown_once_work_on_the_api_and_revoke(client):
    b = Browser(client, "alice")
    r = b.post("/studio/keys", {"label": "mobile app", "rpm": "60"})
    assert r.status_code == 303 and "lmf-" not in r.headers["location"]
    page = b.get("/studio/keys").text
    key = page.split('id="new-key"')[1].split("<pre>")[1].split("</pre>")[0]
    assert key.startswith("lmf-") and "60 rpm" in page
    assert key not in b.get("/studio/keys").text  # once only
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    key_id = int(page.split('action="/studio/keys/')[1].split("/")[0])
    assert b.post(f"/studio/keys/{key_id}/revoke").status_code == 303
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert "revoked" in b.get("/studio/keys").text
