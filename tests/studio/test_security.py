"""The issue's security acceptance points: escaping, CSRF, token scope, workspace isolation, sign-in limits."""
import hashlib
import hmac
import json

from .conftest import PASSWORD, Browser, csrf_of, make_client, sign_in

SCRIPT = "<script>alert('x')</script>"


def test_script_in_user_text_is_shown_as_text_everywhere(alice):
    bot = alice.create_bot("blank", name=SCRIPT, purpose=SCRIPT, greeting=SCRIPT)
    r = alice.post(f"/studio/bots/{bot}/intents", {"name": "xss", "examples": f"{SCRIPT}\nhello there",
                                                   "answer": f"answer {SCRIPT}"})
    assert r.status_code == 303
    assert alice.json(f"/studio/bots/{bot}/train", {}).json()["status"] == "done"
    reply = alice.json(f"/studio/bots/{bot}/test", {"message": SCRIPT}).json()
    assert reply["answer"] == f"answer {SCRIPT}"  # JSON carries the text; the page's script sets textContent
    tok = alice.get(f"/studio/bots/{bot}").text.split('id="bot-token">')[1].split("<")[0]
    alice.client.post(f"/bots/{tok}/messages", json={"message": f"unknown {SCRIPT} thing"})
    pages = [alice.get(u).text for u in ("/studio/", f"/studio/bots/{bot}", f"/studio/bots/{bot}/monitor")]
    for html in pages:
        assert SCRIPT not in html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    # and a page could not run an injected inline script anyway
    assert "script-src 'self'" in alice.get("/studio/").headers["content-security-policy"]


def test_forms_and_scripts_need_the_csrf_token(alice):
    bot = alice.create_bot()
    c = alice.client
    for url, data in [("/studio/bots", {"template": "blank"}), (f"/studio/bots/{bot}/settings", {"name": "x"}),
                      (f"/studio/bots/{bot}/delete", {}), ("/studio/keys", {"label": "k"})]:
        assert c.post(url, data=data, follow_redirects=False).status_code == 403
        assert c.post(url, data={**data, "csrf_token": "forged"}, follow_redirects=False).status_code == 403
    assert c.post(f"/studio/bots/{bot}/train", json={}).status_code == 403
    assert c.post(f"/studio/bots/{bot}/test", json={"message": "hi"}, headers={"X-CSRF-Token": "x"}).status_code == 403
    assert alice.get(f"/studio/bots/{bot}").status_code == 200  # nothing was deleted


def test_sign_in_form_needs_its_token(client):
    r = client.post("/studio/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403


def test_sign_in_is_rate_limited(client):
    for _ in range(5):
        assert "Wrong username or password" in sign_in(client, "alice", "wrong password").text
    r = sign_in(client, "alice")  # right password, but too late
    assert r.status_code == 429 and "Too many" in r.text
    assert sign_in(client, "bob").status_code == 303  # another account is unaffected


def test_wrong_password_and_unknown_user_fail_alike(client):
    a, b = sign_in(client, "alice", "nope nope"), sign_in(client, "nobody", "nope nope")
    assert a.status_code == b.status_code == 200 and "Wrong username or password" in a.text and "Wrong" in b.text


def test_pages_need_sign_in(client):
    r = client.get("/studio/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/studio/login")
    assert client.get("/studio/bots/1/train").status_code == 401


def test_other_workspaces_bots_logs_and_keys_are_404(home, client, alice):
    bot = alice.create_bot()
    alice.json(f"/studio/bots/{bot}/train", {})
    msg = alice.json(f"/studio/bots/{bot}/test", {"message": "where is my order"}).json()
    alice.post("/studio/keys", {"label": "alice-key"})
    key_id = int(alice.get("/studio/keys").text.split('action="/studio/keys/')[1].split("/")[0])
    with make_client(home) as other:
        bob = Browser(other, "bob")
        for url in (f"/studio/bots/{bot}", f"/studio/bots/{bot}/monitor", f"/studio/bots/{bot}/export.csv",
                    f"/studio/bots/{bot}/export.jsonl", f"/studio/bots/{bot}/intents.csv", f"/studio/bots/{bot}/train"):
            assert bob.get(url).status_code == 404, url
        assert bob.post(f"/studio/bots/{bot}/settings", {"name": "mine"}).status_code == 404
        assert bob.post(f"/studio/bots/{bot}/delete").status_code == 404
        assert bob.post(f"/studio/bots/{bot}/improve", {"message_id": msg["message_id"], "intent": "x"}).status_code == 404
        assert bob.json(f"/studio/bots/{bot}/test", {"message": "hi"}).status_code == 404
        assert bob.json(f"/studio/bots/{bot}/test", {"message": "hi", "conversation": msg["conversation"]}).status_code == 404
        assert bob.post(f"/studio/keys/{key_id}/revoke").status_code == 404
        keys = bob.get("/studio/keys").text
        assert "alice-key" not in keys
        assert "where is my order" not in bob.get("/studio/").text
        assert bob.post("/studio/workspace", {"workspace_id": 1}).status_code == 404  # not a member
    assert "revoked" not in alice.get("/studio/keys").text


def test_widget_token_reaches_only_its_own_bot(alice):
    a, b = alice.create_bot(), alice.create_bot("appointment_booking")
    for bot in (a, b):
        alice.json(f"/studio/bots/{bot}/train", {})
    tok = {bot: alice.get(f"/studio/bots/{bot}").text.split('id="bot-token">')[1].split("<")[0] for bot in (a, b)}
    c = alice.client
    first = c.post(f"/bots/{tok[a]}/messages", json={"message": "where is my order"}).json()
    # bot b's token cannot continue, read or rate bot a's conversation
    r = c.post(f"/bots/{tok[b]}/messages", json={"message": "hi", "conversation": first["conversation"]})
    assert r.status_code == 404
    r = c.post(f"/bots/{tok[b]}/feedback", json={"conversation": first["conversation"],
                                                  "message_id": first["message_id"], "rating": 1})
    assert r.status_code == 404
    own = c.post(f"/bots/{tok[b]}/messages", json={"message": "hi"}).json()
    r = c.post(f"/bots/{tok[b]}/feedback", json={"conversation": own["conversation"],
                                                  "message_id": first["message_id"], "rating": 1})
    assert r.status_code == 404
    assert c.post("/bots/bot_not-a-token/messages", json={"message": "hi"}).status_code == 404
    r = c.post(f"/bots/{tok[a]}/feedback", json={"conversation": first["conversation"],
                                                  "message_id": first["message_id"], "rating": -1})
    assert r.status_code == 200


def test_cors_only_for_listed_origins(alice):
    bot = alice.create_bot()
    alice.post(f"/studio/bots/{bot}/settings", {"name": "shop", "threshold": "0.6",
                                                "allowed_origins": "http://shop.example:8080"})
    tok = alice.get(f"/studio/bots/{bot}").text.split('id="bot-token">')[1].split("<")[0]
    c = alice.client
    pre = c.options(f"/bots/{tok}/messages", headers={"Origin": "http://shop.example:8080",
                                                      "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "http://shop.example:8080"
    evil = c.options(f"/bots/{tok}/messages", headers={"Origin": "http://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
    assert c.post(f"/bots/{tok}/messages", json={"message": "hi"}, headers={"Origin": "http://evil.example"}).status_code == 403
    ok = c.post(f"/bots/{tok}/messages", json={"message": "hi"}, headers={"Origin": "http://shop.example:8080"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://shop.example:8080"


def test_webhook_needs_a_valid_signature(alice):
    bot = alice.create_bot()
    alice.json(f"/studio/bots/{bot}/train", {})
    html = alice.get(f"/studio/bots/{bot}").text
    tok = html.split('id="bot-token">')[1].split("<")[0]
    secret = html.split("<summary>Show the webhook secret</summary><code>")[1].split("<")[0]
    body = json.dumps({"sender": "user-42", "text": "where is my parcel"}).encode()
    c = alice.client
    assert c.post(f"/bots/{tok}/webhook", content=body).status_code == 401
    bad = "sha256=" + hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
    assert c.post(f"/bots/{tok}/webhook", content=body, headers={"X-Lmforge-Signature": bad}).status_code == 401
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    r = c.post(f"/bots/{tok}/webhook", content=body, headers={"X-Lmforge-Signature": sig})
    assert r.status_code == 200 and r.json()["recipient"] == "user-42" and "track" in r.json()["text"]


def test_open_redirect_refused(client):
    page = client.get("/studio/login")
    r = client.post("/studio/login", data={"username": "alice", "password": PASSWORD, "next": "//evil.example/",
                                           "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.headers["location"] == "/studio/"


def test_public_channels_are_rate_limited_per_client(monkeypatch, home):
    monkeypatch.setenv("LMFORGE_STUDIO_BOT_RPM_PER_CLIENT", "3")
    with make_client(home) as client:
        alice = Browser(client, "alice")
        bot = alice.create_bot()
        alice.json(f"/studio/bots/{bot}/train", {})
        tok = alice.get(f"/studio/bots/{bot}").text.split('id="bot-token">')[1].split("<")[0]
        first = client.post(f"/bots/{tok}/messages", json={"message": "where is my order"}).json()
        client.post(f"/bots/{tok}/feedback", json={"conversation": first["conversation"],
                                                    "message_id": first["message_id"], "rating": 1})
        assert client.post(f"/bots/{tok}/messages", json={"message": "hi"}).status_code == 200
        r = client.post(f"/bots/{tok}/messages", json={"message": "hi"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert alice.json(f"/studio/bots/{bot}/test", {"message": "hi"}).status_code == 200  # the owner's panel is not
