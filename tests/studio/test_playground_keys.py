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


def test_playground_goes_through_the_generation_service(home, tiny_gpt2):
    """The playground's generations are audited, and its key's filter policy applies (here: block abuse)."""
    from sqlalchemy import select

    from lmforge.bots.tables import WorkspaceKey
    from lmforge.safety.filters import FilterPolicy
    from lmforge.safety.policies import set_policy
    from lmforge.store import ApiKey

    with make_client(home, [tiny_gpt2]) as c:
        b = Browser(c, "alice")
        run = {"model": "tiny-gpt2", "mode": "chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hello"}]}
        assert b.json("/studio/playground/run", run).status_code == 200
        state = c.app.state.lmforge
        audit = state.settings.audit_log
        last = json.loads(audit.read_text().splitlines()[-1])
        assert last["event"] == "generation" and last["moderation"]["source"] == "playground"
        assert last["prompt"] == "hello" and last["completion_tokens"] >= 1
        with state.db.session() as s:
            key = s.scalar(select(ApiKey).join(WorkspaceKey, WorkspaceKey.key_id == ApiKey.id)
                           .where(WorkspaceKey.label == "playground"))
        set_policy(state.db, FilterPolicy.from_dict({"input": {"actions": "block", "thresholds": {"harassment": 0.0}},
                                                     "refusal_message": "Not in the playground."}), key_id=key.id)
        r = b.json("/studio/playground/run", {**run, "messages": [{"role": "user", "content": "you idiot"}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"
        assert r.json()["error"]["message"] == "Not in the playground."
        last = json.loads(audit.read_text().splitlines()[-1])
        assert last["moderation"]["input"]["action"] == "block" and last["completion_tokens"] == 0


def test_a_bots_generative_fallback_goes_through_the_generation_service(home, tiny_gpt2):
    """The bot's generated answer is metered on its workspace's `bots` key and audited as a generation."""
    import torch

    from lmforge.models.hf_io import model_class
    from lmforge.models.presets import make_config
    from lmforge.serve.served import serve_model

    torch.manual_seed(0)  # room for the bot's system prompt: 256 positions
    model = model_class("gpt2")(make_config("gpt2", layers=1, hidden=32, heads=2, ffn=64, max_len=256,
                                            vocab=tiny_gpt2.tokenizer.vocab_size), "lm").eval()
    tiny_gpt2 = serve_model(model, tiny_gpt2.tokenizer, "tiny-gpt2")
    from lmforge.bots import service as bots
    from lmforge.bots.tables import Bot
    from lmforge.serve.accounting import usage_report

    with make_client(home, [tiny_gpt2]) as c:
        b = Browser(c, "alice")
        bot_id = b.create_bot("customer_service", name="Gen bot")
        db = c.app.state.lmforge.db
        with db.session() as s:
            bot = s.get(Bot, bot_id)
        bots.update_bot(db, bot, generative_model="tiny-gpt2", purpose="")  # the tiny model has 64 positions
        reply = b.json(f"/studio/bots/{bot_id}/test", {"message": "xylophone"}).json()
        assert reply["source"] in ("generative", "fallback"), reply
        records = [json.loads(line) for line in c.app.state.lmforge.settings.audit_log.read_text().splitlines()]
        # the service's record of the model call (the bot's guard then records the whole turn)
        [generation] = [r for r in records if r["event"] == "generation" and r["moderation"].get("source") == "bot"]
        assert generation["bot"] == str(bot_id) and generation["model"] == "tiny-gpt2"
        assert [r["model"] for r in usage_report(db) if "/bots/" in r["key"]] == ["tiny-gpt2"]


def test_a_kept_conversation_is_trimmed_oldest_first_to_fit_the_context(home, tiny_gpt2):
    """A 64-token model: turn after turn the history outgrows the context; the oldest turns are left out (the
    system message stays), the page is told how many, and the request still answers."""
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "the cat sat"}
             for i in range(9)]
    messages = [{"role": "system", "content": "be brief"}, *turns]
    with make_client(home, [tiny_gpt2]) as c:
        b = Browser(c, "alice")
        r = b.json("/studio/playground/run", {"model": "tiny-gpt2", "mode": "chat", "temperature": 0,
                                              "max_tokens": 8, "messages": messages})
        assert r.status_code == 200, r.text
        dropped = int(r.headers["x-lmforge-dropped-messages"])
        assert 0 < dropped < len(turns)
        prompt_tokens = sse(r.text)[-1]["usage"]["prompt_tokens"]
        assert prompt_tokens + 8 <= 64
        short = b.json("/studio/playground/run", {"model": "tiny-gpt2", "mode": "chat", "max_tokens": 8,
                                                  "messages": messages[:2]})
        assert "x-lmforge-dropped-messages" not in short.headers
