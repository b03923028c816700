"""The builder as a user drives it (through HTTP): template, intents table and CSV, knowledge, train, test
panel, channels, monitor, improve; and that conversations survive a restart."""
import json

from lmforge.serve import Settings
from lmforge.store import Database
from lmforge.studio import ensure_admin

from .conftest import PASSWORD, Browser, make_client, sign_in


def token_of(b: Browser, bot: int) -> str:
    return b.get(f"/studio/bots/{bot}").text.split('id="bot-token">')[1].split("<")[0]


def test_admin_is_created_once_and_can_sign_in(tmp_path):
    db = Database(Settings(home=tmp_path).database)
    db.migrate()
    password = ensure_admin(db)
    assert password and ensure_admin(db) is None
    from lmforge.bots.tables import User
    with db.session() as s:
        stored = s.query(User).one().password
    assert password not in stored and stored.startswith("scrypt$")
    db.dispose()
    with make_client(tmp_path) as c:
        assert sign_in(c, "admin", password).status_code == 303
        assert "Users" in c.get("/studio/").text
        assert c.get("/studio/admin").status_code == 200


def test_create_from_template_edit_train_and_test(alice):
    bot = alice.create_bot("customer_service", name="Shop helper")
    page = alice.get(f"/studio/bots/{bot}").text
    assert "Shop helper" in page and "opening_hours" in page
    # add an example in the table (all rows are posted back, as the form does)
    csv = alice.get(f"/studio/bots/{bot}/intents.csv").text
    assert csv.startswith("intent,example,answer") and "track_order" in csv
    r = alice.client.post(f"/studio/bots/{bot}/intents/import", data={"csrf_token": alice.csrf},
                          files={"file": ("more.csv", "intent,example,answer\ngift_cards,do you sell gift cards,"
                                                      "Yes: gift cards from 10 to 100 euros.\n"
                                                      "gift_cards,can I buy a voucher,\n", "text/csv")},
                          follow_redirects=False)
    assert r.status_code == 303 and "saved=import" in r.headers["location"]
    state = alice.json(f"/studio/bots/{bot}/train", {}).json()
    assert state["status"] == "done" and state["version"] == 1 and "classifier head" in state["message"]
    reply = alice.json(f"/studio/bots/{bot}/test", {"message": "do you sell vouchers or gift cards"}).json()
    assert reply["source"] == "intent" and reply["intent"] == "gift_cards" and "gift cards" in reply["answer"]
    assert 0.6 <= reply["confidence"] <= 1 and reply["example"]
    unknown = alice.json(f"/studio/bots/{bot}/test", {"message": "xylophone quartz zebra"}).json()
    assert unknown["source"] == "fallback" and unknown["answer"].startswith("Sorry")


def test_intents_table_save_and_validation(alice):
    bot = alice.create_bot("blank")
    r = alice.post(f"/studio/bots/{bot}/intents", {"name": ["hours", ""], "examples": ["when open\nhours?", "x"],
                                                   "answer": ["nine to five", "y"]})
    assert r.status_code == 303
    assert alice.get(f"/studio/bots/{bot}/intents.csv").text.splitlines()[1:] == ["hours,when open,nine to five",
                                                                                   "hours,hours?,nine to five"]
    r = alice.post(f"/studio/bots/{bot}/intents", {"name": ["a", "a"], "examples": ["x", "y"], "answer": ["1", "2"]})
    assert "error=" in r.headers["location"]


def test_knowledge_answers_quote_the_document(alice):
    bot = alice.create_bot("blank", name="Docs bot")
    doc = "# Warranty\nEvery kettle has a warranty of five years from the date of purchase.\n"
    r = alice.client.post(f"/studio/bots/{bot}/documents", data={"csrf_token": alice.csrf},
                          files={"file": ("warranty.md", doc, "text/markdown")}, follow_redirects=False)
    assert "saved=document" in r.headers["location"]
    bad = alice.client.post(f"/studio/bots/{bot}/documents", data={"csrf_token": alice.csrf},
                            files={"file": ("x.exe", b"MZ", "application/octet-stream")}, follow_redirects=False)
    assert "error=" in bad.headers["location"]
    alice.json(f"/studio/bots/{bot}/train", {})
    reply = alice.json(f"/studio/bots/{bot}/test", {"message": "how long is the kettle warranty"}).json()
    assert reply["source"] == "document" and reply["document"] == "warranty.md"
    assert "five years" in reply["answer"] and "warranty.md" in reply["answer"]


def test_rest_feedback_monitor_export_and_improve(alice):
    bot = alice.create_bot()
    alice.json(f"/studio/bots/{bot}/train", {})
    tok, c = token_of(alice, bot), alice.client
    a = c.post(f"/bots/{tok}/messages", json={"message": "where is my order"}).json()
    assert a["source"] == "intent" and a["intent"] == "track_order"
    c.post(f"/bots/{tok}/feedback", json={"conversation": a["conversation"], "message_id": a["message_id"], "rating": 1})
    miss = c.post(f"/bots/{tok}/messages", json={"message": "do you ship to norway",
                                                 "conversation": a["conversation"]}).json()
    assert miss["source"] == "fallback"
    c.post(f"/bots/{tok}/feedback", json={"conversation": a["conversation"], "message_id": miss["message_id"],
                                          "rating": -1})
    page = alice.get(f"/studio/bots/{bot}/monitor").text
    assert 'id="stat-conversations">1<' in page and 'id="stat-messages">2<' in page
    assert 'id="stat-up">1<' in page and 'id="stat-down">1<' in page and "50%" in page
    assert "do you ship to norway" in page.split('id="unanswered"')[1] and "<svg" in page
    rows = [json.loads(line) for line in alice.get(f"/studio/bots/{bot}/export.jsonl").text.splitlines()]
    assert [(r["question"], r["rating"]) for r in rows] == [("where is my order", 1), ("do you ship to norway", -1)]
    assert alice.get(f"/studio/bots/{bot}/export.csv").text.startswith("conversation_id,channel,message_id")
    # improve: the unanswered question becomes an example of a new intent, the bot retrains
    r = alice.post(f"/studio/bots/{bot}/improve", {"message_id": miss["message_id"], "intent": "shipping_abroad",
                                                   "answer": "We ship to all of Europe, Norway included."})
    assert r.status_code == 303
    assert alice.get(f"/studio/bots/{bot}/train").json()["version"] == 2
    again = alice.json(f"/studio/bots/{bot}/test", {"message": "do you ship to norway?"}).json()
    assert again["source"] == "intent" and again["intent"] == "shipping_abroad" and "Norway" in again["answer"]
    assert "do you ship to norway" not in alice.get(f"/studio/bots/{bot}/monitor").text.split('id="unanswered"')[1] \
        .split("</section>")[0]


def test_conversations_survive_a_restart(home):
    with make_client(home) as c:
        b = Browser(c, "alice")
        bot = b.create_bot()
        b.json(f"/studio/bots/{bot}/train", {})
        tok = token_of(b, bot)
        first = c.post(f"/bots/{tok}/messages", json={"message": "when are you open"}).json()
        cookie = c.cookies.get("lmforge_session")
    with make_client(home) as c2:  # a new server process on the same database
        c2.cookies.set("lmforge_session", cookie)
        second = c2.post(f"/bots/{tok}/messages", json={"message": "where is my order",
                                                        "conversation": first["conversation"]})
        assert second.status_code == 200 and second.json()["intent"] == "track_order"  # the trained bot too
        page = c2.get(f"/studio/bots/{bot}/monitor").text
        assert 'id="stat-conversations">1<' in page and 'id="stat-messages">2<' in page


def test_workspace_switch_and_admin_creates_users(home):
    db = Database(Settings(home=home).database)
    from lmforge.studio.security import create_user
    create_user(db, "root", PASSWORD, workspace="team-a", is_admin=True)
    db.dispose()
    with make_client(home) as c:
        root = Browser(c, "root")
        r = root.post("/studio/admin/users", {"username": "carol", "password": "longpassword", "workspace": "team-c"})
        assert "created=carol" in r.headers["location"]
        assert "team-c" in root.get("/studio/admin").text
    with make_client(home) as c:
        alice = Browser(c, "alice")
        assert alice.get("/studio/admin").status_code == 404  # not an admin


def test_improve_needs_an_answer_for_a_new_intent(alice):
    bot = alice.create_bot()
    alice.json(f"/studio/bots/{bot}/train", {})
    miss = alice.json(f"/studio/bots/{bot}/test", {"message": "xylophone quartz"}).json()
    r = alice.post(f"/studio/bots/{bot}/improve", {"message_id": miss["message_id"], "intent": "brand_new"})
    assert "Give%20an%20answer" in r.headers["location"]
    assert "brand_new" not in alice.get(f"/studio/bots/{bot}/intents.csv").text
    r = alice.post(f"/studio/bots/{bot}/improve", {"message_id": miss["message_id"], "intent": "track_order"})
    assert "retraining" in r.headers["location"]  # an existing intent keeps its answer
    assert "track_order,xylophone quartz" in alice.get(f"/studio/bots/{bot}/intents.csv").text


def tiny_qa_model(folder):
    """A tiny random BERT with an extractive-QA head, saved as `lmforge finetune` saves one (its answers are
    arbitrary spans: this checks the wiring; tests/bots/test_knowledge.py checks the choice of span)."""
    import torch

    from lmforge.models.hf_io import model_class
    from lmforge.models.presets import TINY, make_config
    from lmforge.tasks import Predictor
    from lmforge.tasks.registry import get_task
    from lmforge.tokenizer import train_tokenizer

    corpus = folder.parent / "qa-corpus.txt"
    corpus.write_text("every kettle has a warranty of five years from the date of purchase\n" * 20)
    tok = train_tokenizer("bert", [corpus], vocab_size=120)
    torch.manual_seed(0)
    model = model_class("bert")(make_config("bert", **{**TINY, "vocab": len(tok), "max_len": 128}), "qa")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    Predictor(model, tok, get_task("qa"), "span").save_meta(folder)
    return Predictor.load(folder)


def test_a_bot_with_a_qa_model_answers_a_span_and_quotes_it(monkeypatch, home, tmp_path):
    predictor = tiny_qa_model(tmp_path / "kettle-qa")
    monkeypatch.setenv("LMFORGE_STUDIO_QA_MODELS", str(tmp_path / "kettle-qa"))
    with make_client(home) as client:
        alice = Browser(client, "alice")
        bot = alice.create_bot("blank", name="Docs bot")
        doc = "# Warranty\nEvery kettle has a warranty of five years from the date of purchase.\n"
        alice.client.post(f"/studio/bots/{bot}/documents", data={"csrf_token": alice.csrf},
                          files={"file": ("warranty.md", doc, "text/markdown")})
        assert '<option value="kettle-qa"' in alice.get(f"/studio/bots/{bot}").text
        settings = {"name": "Docs bot", "threshold": "0.6", "qa_model": "kettle-qa"}
        assert "error=" in alice.post(f"/studio/bots/{bot}/settings", {**settings, "qa_model": "/etc"}).headers["location"]
        assert "saved=" in alice.post(f"/studio/bots/{bot}/settings", settings).headers["location"]
        alice.json(f"/studio/bots/{bot}/train", {})
        question = "how long is the kettle warranty"
        reply = alice.json(f"/studio/bots/{bot}/test", {"message": question}).json()
        sentence = "Every kettle has a warranty of five years from the date of purchase."
        span = predictor.answer([question], [sentence])[0]["text"].strip()
        assert span and reply["source"] == "document"
        assert reply["answer"] == f'{span} (from "warranty.md": "{sentence}")'


def test_monitor_counts_what_the_safety_policy_blocked_and_flagged(home, alice):
    from lmforge.store import SafetyEvent

    bot, other = alice.create_bot(), alice.create_bot()
    assert 'id="stat-blocked">0<' in alice.get(f"/studio/bots/{bot}/monitor").text
    db = Database(Settings(home=home).database)
    with db.session() as s:
        s.add_all([SafetyEvent(bot_id=bot, direction="input", action="block", categories="harassment"),
                   SafetyEvent(bot_id=bot, direction="output", action="block", categories="violence"),
                   SafetyEvent(bot_id=bot, direction="input", action="flag", categories="harassment"),
                   SafetyEvent(bot_id=other, direction="input", action="block", categories="hate")])
    db.dispose()
    page = alice.get(f"/studio/bots/{bot}/monitor").text
    assert 'id="stat-blocked">2<' in page and 'id="stat-flagged">1<' in page
    assert "blocked by the safety policy per day" in page
    assert 'id="stat-blocked">1<' in alice.get(f"/studio/bots/{other}/monitor").text


def test_fine_tuning_is_a_bot_setting_and_needs_minilm(alice):
    bot = alice.create_bot()
    settings = {"name": "Shop", "threshold": "0.6"}
    alice.post(f"/studio/bots/{bot}/settings", {**settings, "tune_encoder": "on"})
    assert 'name="tune_encoder" checked' in alice.get(f"/studio/bots/{bot}").text
    state = alice.json(f"/studio/bots/{bot}/train", {}).json()  # the tests' hashing embedder cannot be tuned
    assert state["status"] == "done" and "fine-tuned" not in state["message"]
    alice.post(f"/studio/bots/{bot}/settings", settings)  # an unticked box is off
    assert 'name="tune_encoder" checked' not in alice.get(f"/studio/bots/{bot}").text


def test_the_root_address_opens_the_studio(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/studio"
