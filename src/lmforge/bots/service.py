"""Bots in the database: creating them from templates, editing intents, training (with progress in the
`trained_matchers` row), chatting (one transaction per turn), feedback and improving from the logs.

Every function that takes a `workspace_id` filters by it; a bot of another workspace is "not found"."""
from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime, timezone

import numpy as np
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select

from ..safety.audit_log import AuditLog
from ..safety.bots import BotGuard
from ..store import Database
from .knowledge import KnowledgeIndex, Reader
from .matcher import Matcher, dumps
from .runtime import BotConfig, Brain, Generate, Reply, respond
from .schema import BotSpec, IntentSpec, templates
from .tables import (
    Bot,
    Conversation,
    Document,
    Feedback,
    Intent,
    Message,
    TrainedMatcher,
)
from .tuning import PREFIX as ENCODER_PREFIX

log = logging.getLogger(__name__)


class NotFound(Exception):
    pass


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ------------------------------------------------------------------------------------------- bots


def create_bot(db: Database, workspace_id: int, template: str = "blank", generative_model: str | None = None,
               **overrides) -> Bot:
    """A new bot from a template (its intents and documents copied), with `overrides` for the form's fields;
    `generative_model` answers what the intents and documents do not (None: the fallback text)."""
    spec = templates().get(template)
    if spec is None:
        raise ValueError(f"unknown template {template!r}")
    fields = {k: v for k, v in overrides.items() if v not in (None, "")}
    spec = BotSpec.model_validate({**spec.model_dump(), **fields})
    with db.session() as s:
        bot = Bot(workspace_id=workspace_id, name=spec.name, purpose=spec.purpose, greeting=spec.greeting,
                  fallback=spec.fallback, threshold=spec.threshold, token="bot_" + secrets.token_urlsafe(24),
                  webhook_secret=secrets.token_urlsafe(32), allowed_origins="", template=template,
                  generative_model=generative_model)
        s.add(bot)
        s.flush()
        for it in spec.intents:
            s.add(Intent(bot_id=bot.id, name=it.name, examples="\n".join(it.examples), answer=it.answer))
        for doc in spec.documents:
            s.add(Document(bot_id=bot.id, name=doc.name, text=doc.text))
        s.add(TrainedMatcher(bot_id=bot.id, status="idle", progress=0.0, message="not trained yet", version=0))
    return bot


def list_bots(db: Database, workspace_id: int) -> list[Bot]:
    with db.session() as s:
        return list(s.scalars(select(Bot).where(Bot.workspace_id == workspace_id).order_by(Bot.id)))


def get_bot(db: Database, workspace_id: int, bot_id: int) -> Bot:
    with db.session() as s:
        bot = s.scalar(select(Bot).where(Bot.id == bot_id, Bot.workspace_id == workspace_id))
    if bot is None:
        raise NotFound()
    return bot


def bot_by_token(db: Database, token: str) -> Bot:
    with db.session() as s:
        bot = s.scalar(select(Bot).where(Bot.token == token))
    if bot is None or not secrets.compare_digest(bot.token, token):
        raise NotFound()
    return bot


def update_bot(db: Database, bot: Bot, **fields) -> None:
    with db.session() as s:
        row = s.get(Bot, bot.id)
        for k, v in fields.items():
            setattr(row, k, v)


def delete_bot(db: Database, bot: Bot) -> None:
    with db.session() as s:
        s.execute(delete(Bot).where(Bot.id == bot.id))


def origins(bot: Bot) -> list[str]:
    return [o.strip().rstrip("/") for o in bot.allowed_origins.split() if o.strip()]


# ---------------------------------------------------------------------------------------- intents


def intents(db: Database, bot: Bot) -> list[Intent]:
    with db.session() as s:
        return list(s.scalars(select(Intent).where(Intent.bot_id == bot.id).order_by(Intent.name)))


def replace_intents(db: Database, bot: Bot, specs: list[IntentSpec]) -> None:
    BotSpec(name=bot.name, intents=specs)  # validates: unique names
    with db.session() as s:
        s.execute(delete(Intent).where(Intent.bot_id == bot.id))
        for it in specs:
            s.add(Intent(bot_id=bot.id, name=it.name, examples="\n".join(it.examples), answer=it.answer))


def merge_intents(db: Database, bot: Bot, specs: list[IntentSpec]) -> None:
    """Add examples to existing intents (answers replaced where given) and create new ones (CSV import)."""
    with db.session() as s:
        for it in specs:
            row = s.scalar(select(Intent).where(Intent.bot_id == bot.id, Intent.name == it.name))
            if row is None:
                s.add(Intent(bot_id=bot.id, name=it.name, examples="\n".join(it.examples), answer=it.answer))
                continue
            known = set(row.example_list)
            row.examples = "\n".join(row.example_list + [e for e in it.examples if e not in known])
            if it.answer:
                row.answer = it.answer


def add_example(db: Database, bot: Bot, intent: str, example: str, answer: str = "",
                message_id: int | None = None) -> None:
    """One example for an intent (created if new, with `answer`); marks the message it came from as resolved."""
    spec = IntentSpec(name=intent.strip(), examples=[example], answer=answer.strip())
    merge_intents(db, bot, [spec])
    if message_id is not None:
        with db.session() as s:
            msg = s.scalar(select(Message).where(Message.id == message_id, Message.bot_id == bot.id))
            if msg is None:
                raise NotFound()
            msg.resolved = True


def as_specs(rows: list[Intent]) -> list[IntentSpec]:
    return [IntentSpec(name=r.name, examples=r.example_list, answer=r.answer) for r in rows]


# -------------------------------------------------------------------------------------- documents


def documents(db: Database, bot: Bot) -> list[Document]:
    with db.session() as s:
        return list(s.scalars(select(Document).where(Document.bot_id == bot.id).order_by(Document.id)))


def add_document(db: Database, bot: Bot, name: str, text: str) -> None:
    with db.session() as s:
        s.add(Document(bot_id=bot.id, name=name[:200], text=text))


def delete_document(db: Database, bot: Bot, doc_id: int) -> None:
    with db.session() as s:
        if s.execute(delete(Document).where(Document.id == doc_id, Document.bot_id == bot.id)).rowcount == 0:
            raise NotFound()


# --------------------------------------------------------------------------------------- training


def training_state(db: Database, bot: Bot) -> TrainedMatcher:
    with db.session() as s:
        row = s.get(TrainedMatcher, bot.id)
    return row or TrainedMatcher(bot_id=bot.id, status="idle", progress=0.0, message="not trained yet", version=0)


def _set_progress(db: Database, bot_id: int, **fields) -> None:
    with db.session() as s:
        row = s.get(TrainedMatcher, bot_id)
        for k, v in fields.items():
            setattr(row, k, v)
        row.updated_at = utcnow()


def start_training(db: Database, bot: Bot) -> bool:
    """Mark the bot as training; False if a training run is already going."""
    with db.session() as s:
        row = s.get(TrainedMatcher, bot.id, with_for_update=True)
        if row is None:
            row = TrainedMatcher(bot_id=bot.id, version=0)
            s.add(row)
        elif row.status == "running":
            return False
        row.status, row.progress, row.message, row.updated_at = "running", 0.0, "starting", utcnow()
    return True


def train(db: Database, bot: Bot, embedder) -> None:
    """Embed the examples and documents, fit the matcher, store it with a new version (call after
    `start_training`). Progress goes to the `trained_matchers` row, which the builder page polls."""
    try:
        rows = intents(db, bot)
        pairs = [(ex, r.name) for r in rows for ex in r.example_list]
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            if fraction - last[0] >= 0.05 or fraction >= 1.0:  # a database write per 5 %, not per batch
                last[0] = fraction
                _set_progress(db, bot.id, progress=round(0.8 * fraction, 3), message=message)

        arrays: dict[str, np.ndarray] = {}
        if pairs:
            matcher = Matcher.train(pairs, embedder, progress, tune_epochs=1 if bot.tune_encoder else 0)
            arrays.update(matcher.arrays())
        answered = [r for r in rows if r.answer]
        arrays["answer_intents"] = np.array([r.name for r in answered], dtype=np.str_)
        arrays["answer_texts"] = np.array([r.answer for r in answered], dtype=np.str_)
        docs = documents(db, bot)
        _set_progress(db, bot.id, progress=0.85, message=f"indexing {len(docs)} document(s)")
        if docs:
            arrays.update(KnowledgeIndex.build([(d.name, d.text) for d in docs], embedder).arrays())
        kind = "classifier head" if "head_w" in arrays else "nearest examples"
        if any(k.startswith(ENCODER_PREFIX) for k in arrays):
            kind += " on a fine-tuned encoder"
        n_sent = len(arrays.get("kb_texts", []))
        with db.session() as s:
            row = s.get(TrainedMatcher, bot.id)
            row.blob, row.version = dumps(arrays), row.version + 1
            row.status, row.progress, row.updated_at = "done", 1.0, utcnow()
            row.message = (f"trained on {len(pairs)} examples of {len(rows)} intents ({kind}); "
                           f"{len(docs)} document(s), {n_sent} passages")
    except Exception as e:  # the page shows it; the server goes on
        log.exception("training bot %s failed", bot.id)
        _set_progress(db, bot.id, status="failed", message=f"training failed: {e}")


def train_in_background(db: Database, bot: Bot, embedder) -> threading.Thread:
    t = threading.Thread(target=train, args=(db, bot, embedder), daemon=True, name=f"train-bot-{bot.id}")
    t.start()
    return t


class BrainCache:
    """Trained bots loaded in this process, refreshed when the stored version changes (another process or
    a new training run)."""

    def __init__(self):
        self._brains: dict[int, Brain] = {}
        self._lock = threading.Lock()

    def get(self, db: Database, bot_id: int) -> Brain | None:
        with db.session() as s:
            version = s.scalar(select(TrainedMatcher.version).where(TrainedMatcher.bot_id == bot_id))
        if not version:
            return None
        brain = self._brains.get(bot_id)
        if brain is not None and brain.version == version:
            return brain
        with db.session() as s:
            row = s.get(TrainedMatcher, bot_id)
            blob, version = row.blob, row.version
        brain = Brain.from_blob(blob, version)
        with self._lock:
            self._brains[bot_id] = brain
        return brain


# -------------------------------------------------------------------------------------------- chat


def conversation(db: Database, bot: Bot, channel: str, secret: str | None = None,
                 external_id: str | None = None) -> Conversation:
    """The bot's conversation with this secret (or webhook sender), or a new one. A secret of another
    bot's conversation is NotFound: a token only reaches its own bot's conversations."""
    with db.session() as s:
        if secret:
            conv = s.scalar(select(Conversation).where(Conversation.secret == secret))
            if conv is None or conv.bot_id != bot.id:
                raise NotFound()
            return conv
        if external_id:
            conv = s.scalar(select(Conversation).where(Conversation.bot_id == bot.id,
                                                       Conversation.external_id == external_id))
            if conv is not None:
                return conv
        conv = Conversation(bot_id=bot.id, channel=channel, secret="c_" + secrets.token_urlsafe(24),
                            external_id=external_id)
        s.add(conv)
    return conv


async def chat(db: Database, cache: BrainCache, embedder, bot: Bot, conv: Conversation, text: str,
               generate: Generate | None = None, audit: AuditLog | None = None, *,
               reader: Reader | None = None) -> tuple[Message, Reply]:
    """Answer one message and store the turn (question and answer in one transaction, so a crash
    mid-request loses only that request). The bot's safety policy screens both; the turn is stored with
    PII redacted unless the policy turns that off (safety/bots.py). `reader`: the QA model the bot chose
    for its documents, if any."""
    config = BotConfig(bot.purpose, bot.fallback, bot.threshold, bot.generative_model)
    # --- safety (safety/bots.py): input screening; a blocked question gets the refusal, no model call
    guard = await run_in_threadpool(BotGuard.load, db, bot.id, audit)
    refusal = await run_in_threadpool(guard.screen_input, text)
    if refusal:
        reply = Reply(refusal, "blocked")
    else:
        reply = await respond(config, cache.get(db, bot.id), embedder, text, generate, reader)
    model = bot.generative_model if reply.source == "generative" else f"bot-{reply.source}"
    reply.text = await run_in_threadpool(guard.screen_output, text, reply.text, model)
    # --- end safety
    with db.session() as s:
        msg = Message(conversation_id=conv.id, bot_id=bot.id, question=guard.stored(text), answer=guard.stored(reply.text),
                      source=reply.source, intent=reply.intent, document=reply.document,
                      confidence=reply.confidence, latency_ms=reply.latency_ms, resolved=False)
        s.add(msg)
    return msg, reply


def rate(db: Database, bot: Bot, message_id: int, rating: int, conv: Conversation | None = None) -> None:
    """Thumbs up (+1) or down (-1) on one of this bot's answers (of this conversation, when given)."""
    if rating not in (1, -1):
        raise ValueError("rating must be 1 or -1")
    with db.session() as s:
        msg = s.scalar(select(Message).where(Message.id == message_id, Message.bot_id == bot.id))
        if msg is None or (conv is not None and msg.conversation_id != conv.id):
            raise NotFound()
        row = s.get(Feedback, message_id)
        if row is None:
            s.add(Feedback(message_id=message_id, rating=rating))
        else:
            row.rating, row.created_at = rating, utcnow()


def history(db: Database, conv: Conversation) -> list[Message]:
    with db.session() as s:
        return list(s.scalars(select(Message).where(Message.conversation_id == conv.id).order_by(Message.id)))
