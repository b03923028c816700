"""The studio's tables, on the store's metadata (`lmforge.store.Base`): users, workspaces, sessions, bots and
their intents, documents, trained matchers, conversations, messages and feedback. Created by migration 0002.

Every row a user can reach hangs off a workspace (`workspace_id` on bots and keys), so one filter in the
queries of `studio/deps.py` is what keeps teams apart."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..store.models import Base, utcnow


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A studio account. `password` is `scrypt$n$r$p$salt$hash` (hex), never the password."""

    __tablename__ = "studio_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password: Mapped[str] = mapped_column(String(300))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("studio_users.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)


class StudioSession(Base):
    """A signed-in browser: the cookie holds a random token, the table its SHA-256 digest."""

    __tablename__ = "studio_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("studio_users.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """Failed sign-ins, counted per username and per address to rate-limit guessing (in the database, so
    several server processes share the count)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class WorkspaceKey(Base):
    """Which workspace an API key (serve's `api_keys`) belongs to; keys made with the CLI belong to none."""

    __tablename__ = "workspace_keys"

    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    internal: Mapped[bool] = mapped_column(Boolean, default=False)  # the playground's own key


class Bot(Base):
    __tablename__ = "bots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(Text, default="")
    greeting: Mapped[str] = mapped_column(Text, default="")
    fallback: Mapped[str] = mapped_column(Text, default="")
    threshold: Mapped[float] = mapped_column(Float, default=0.6)
    generative_model: Mapped[str | None] = mapped_column(String(200))
    qa_model: Mapped[str | None] = mapped_column(String(200))  # one of the server's LMFORGE_STUDIO_QA_MODELS
    tune_encoder: Mapped[bool] = mapped_column(Boolean, default=False)  # Train fine-tunes MiniLM (bots/tuning.py)
    token: Mapped[str] = mapped_column(String(64), unique=True)  # public: widget and REST channel
    webhook_secret: Mapped[str] = mapped_column(String(64))
    allowed_origins: Mapped[str] = mapped_column(Text, default="")  # one origin per line
    template: Mapped[str] = mapped_column(String(50), default="blank")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Intent(Base):
    __tablename__ = "intents"
    __table_args__ = (UniqueConstraint("bot_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    examples: Mapped[str] = mapped_column(Text, default="")  # one example question per line
    answer: Mapped[str] = mapped_column(Text, default="")

    @property
    def example_list(self) -> list[str]:
        return [e.strip() for e in self.examples.splitlines() if e.strip()]


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainedMatcher(Base):
    """The newest matcher (and document index) of a bot, serialised (npz), with the training job's state."""

    __tablename__ = "trained_matchers"

    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="idle")  # idle, running, done, failed
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # tens of MB with a tuned encoder
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20))  # test, rest, widget, webhook
    secret: Mapped[str] = mapped_column(String(64), unique=True)  # the client's handle on it
    external_id: Mapped[str | None] = mapped_column(String(200))  # webhook sender
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Message(Base):
    """A user's question and the bot's answer, stored together once answered (one transaction per turn)."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[int] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))  # intent, document, generative, fallback
    intent: Mapped[str | None] = mapped_column(String(100))
    document: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)  # turned into an example
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Feedback(Base):
    __tablename__ = "feedback"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    rating: Mapped[int] = mapped_column(Integer)  # +1 or -1
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChannelWindow(Base):
    """Requests one caller of the public bot channels made in one clock minute (`window` = unix time // 60);
    `bucket` names the caller (`bot:<id>` for all callers of a bot, `bot:<id>:<address>` for one client)."""

    __tablename__ = "bot_rate_windows"

    bucket: Mapped[str] = mapped_column(String(120), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
