"""Policies and safety events in the database (per key and per bot, counted per day), and the safety hook in a
bot's turn: a blocked question gets the refusal without a model call, conversations are stored with PII
redacted unless the bot turns that off, and the turn is audited."""
import asyncio
from datetime import datetime, timezone

import pytest

from lmforge.bots import service
from lmforge.bots.tables import Message, Workspace
from lmforge.safety.audit_log import AuditLog
from lmforge.safety.filters import FilterPolicy
from lmforge.safety.moderation import Decision, Result
from lmforge.safety.policies import get_policy, record_events, safety_counts, set_policy
from lmforge.serve.auth import create_key, revoke_key
from lmforge.store import Database, SafetyEvent

PII = "I am ann@example.com, call me on 415-555-2671"


@pytest.fixture
def db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def bot(db):
    with db.session() as s:
        ws = Workspace(name="w")
        s.add(ws)
    return service.create_bot(db, ws.id, "blank", name="helper", fallback="I don't know yet.")


def decision(action):
    return Decision(action, Result(action != "allow", {"harassment": action != "allow", "hate": False}, {}))


def test_policies_per_key_and_bot(db, bot):
    key, _ = create_key(db, "k", policy=FilterPolicy(watermark=True, input=None))
    assert get_policy(db, key_id=key.id).watermark and get_policy(db, key_id=key.id).input is None
    assert get_policy(db, bot_id=bot.id) == FilterPolicy()  # nothing stored: the default
    set_policy(db, FilterPolicy(redact_conversations=False), bot_id=bot.id)
    set_policy(db, FilterPolicy(redact_output=True), bot_id=bot.id)  # replaced, not added
    assert get_policy(db, bot_id=bot.id) == FilterPolicy(redact_output=True)
    with pytest.raises(ValueError, match="exactly one"):
        set_policy(db, FilterPolicy(), key_id=key.id, bot_id=bot.id)
    service.delete_bot(db, bot)
    assert get_policy(db, bot_id=bot.id) == FilterPolicy()  # the policy went with the bot


def test_counts_per_owner_and_day(db, bot):
    key, _ = create_key(db, "k")
    record_events(db, {"input": decision("block"), "output": decision("allow")}, key_id=key.id)
    record_events(db, {"input": decision("flag"), "output": decision("flag")}, bot_id=bot.id)
    with db.session() as s:  # one from an earlier day
        s.add(SafetyEvent(key_id=key.id, direction="input", action="block", categories="harassment",
                          created_at=datetime(2024, 5, 1, 23, 59, tzinfo=timezone.utc)))
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert safety_counts(db, key_id=key.id) == [
        {"day": "2024-05-01", "key_id": key.id, "bot_id": None, "blocked": 1, "flagged": 0},
        {"day": today, "key_id": key.id, "bot_id": None, "blocked": 1, "flagged": 0}]
    assert safety_counts(db, bot_id=bot.id) == [{"day": today, "key_id": None, "bot_id": bot.id, "blocked": 0,
                                                 "flagged": 2}]
    assert len(safety_counts(db)) == 3
    assert len(safety_counts(db, start=datetime(2025, 1, 1, tzinfo=timezone.utc))) == 2
    revoke_key(db, "k")  # revoked keys keep their history
    assert len(safety_counts(db, key_id=key.id)) == 2


def chat(db, bot, text, audit=None, generate=None):
    conv = service.conversation(db, bot, "rest")
    return asyncio.run(service.chat(db, service.BrainCache(), None, bot, conv, text, generate, audit))


def test_bot_turns_are_stored_redacted_by_default(db, bot, tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    msg, reply = chat(db, bot, PII, audit)
    assert reply.text == "I don't know yet." and reply.source == "fallback"
    with db.session() as s:
        stored = s.get(Message, msg.id)
    assert stored.question == "I am [EMAIL], call me on [PHONE]"
    [record] = list(audit.read())
    assert record["bot"] == str(bot.id) and record["prompt"] == stored.question and record["model"] == "bot-fallback"
    assert "ann@example.com" not in audit.path.read_text()
    set_policy(db, FilterPolicy(redact_conversations=False), bot_id=bot.id)
    msg, _ = chat(db, bot, PII)
    with db.session() as s:
        assert s.get(Message, msg.id).question == PII


def test_blocked_question_gets_the_refusal_without_a_model_call(db, bot):
    set_policy(db, FilterPolicy.from_dict({"input": "block", "refusal_message": "Please be kind."}), bot_id=bot.id)
    service.update_bot(db, bot, generative_model="m")
    bot = service.get_bot(db, bot.workspace_id, bot.id)
    calls = []

    async def generate(model, purpose, question):
        calls.append(question)
        return "generated"

    _, reply = chat(db, bot, "you stupid idiot, fuck off", generate=generate)
    assert (reply.text, reply.source, calls) == ("Please be kind.", "blocked", [])
    _, reply = chat(db, bot, "what are your opening hours?", generate=generate)
    assert reply.text == "generated" and calls == ["what are your opening hours?"]
    assert safety_counts(db, bot_id=bot.id)[0]["blocked"] == 1


def test_bot_output_filter(db, bot):
    set_policy(db, FilterPolicy.from_dict({"output": {"actions": "block", "thresholds": {"hate": 0, "harassment": 0}},
                                           "refusal_message": "Withheld."}), bot_id=bot.id)
    _, reply = chat(db, bot, "hello")
    assert reply.text == "Withheld."
    set_policy(db, FilterPolicy(redact_output=True), bot_id=bot.id)
    service.update_bot(db, bot, fallback="Mail ann@example.com")
    _, reply = chat(db, service.get_bot(db, bot.workspace_id, bot.id), "hello")
    assert reply.text == "Mail [EMAIL]"
