"""Channels as small adapters: each turns its platform's payload into an `Incoming` message and the bot's
reply back into the platform's shape. The routes (studio/public.py) do transport and authentication."""
from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE = 2000


@dataclass
class Incoming:
    text: str
    channel: str
    conversation: str | None = None  # the conversation's secret handle (REST, widget)
    sender: str | None = None  # the platform's user id (webhook)


def _text(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_MESSAGE else None


def rest_in(body: dict | None) -> Incoming | None:
    """`{"message": "...", "conversation": "c_..." (optional), "channel": "widget" (optional)}`."""
    if not body:
        return None
    text = _text(body.get("message"))
    conv = body.get("conversation")
    if text is None or (conv is not None and not isinstance(conv, str)):
        return None
    channel = "widget" if body.get("channel") == "widget" else "rest"
    return Incoming(text, channel, conv or None)


def rest_out(conv, msg, reply) -> dict:
    return {"conversation": conv.secret, "message_id": msg.id, "answer": reply.text, "source": reply.source,
            "intent": reply.intent if reply.source == "intent" else None, "document": reply.document,
            "confidence": round(reply.confidence, 3)}


def webhook_in(body) -> Incoming | None:
    """Generic messaging platforms: `{"sender": "user-42", "text": "..."}`."""
    if not isinstance(body, dict):
        return None
    text, sender = _text(body.get("text")), body.get("sender")
    if text is None or not isinstance(sender, str) or not 0 < len(sender) <= 200:
        return None
    return Incoming(text, "webhook", sender=sender)


def webhook_out(incoming: Incoming, msg, reply) -> dict:
    return {"recipient": incoming.sender, "text": reply.text, "message_id": msg.id, "source": reply.source}
