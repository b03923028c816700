"""The tables: API keys (stored as digests), usage records, per-minute rate-limit windows, and the safety
filter policies and blocked/flagged events (of keys and of bots, whose tables are in lmforge/bots/tables.py).

Everything a server process needs to enforce limits lives here, so several processes (or machines)
sharing one PostgreSQL database enforce the same limits."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import CheckConstraint, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """A key is shown once at creation; only its SHA-256 digest and a short public prefix are kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # the first characters, to find the row
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    rpm: Mapped[int | None] = mapped_column(Integer)  # requests per minute; None: unlimited
    tpm: Mapped[int | None] = mapped_column(Integer)  # tokens per minute; None: unlimited
    budget_usd: Mapped[float | None] = mapped_column(Float)  # None: unlimited
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Usage(Base):
    """One served request: tokens counted from token ids, priced when it was served."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(50))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class RateWindow(Base):
    """Requests and tokens a key used in one clock minute (`window` = unix time // 60)."""

    __tablename__ = "rate_windows"

    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)


class SafetyPolicy(Base):
    """The filter policy (safety/filters.py, as JSON) of one API key or one bot; none stored: the default."""

    __tablename__ = "safety_policies"
    __table_args__ = (CheckConstraint("(key_id IS NULL) <> (bot_id IS NULL)", name="ck_safety_policies_one_owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), unique=True)
    bot_id: Mapped[int | None] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), unique=True)
    policy: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SafetyEvent(Base):
    """One blocked or flagged text (a request's input or a model's output), counted on the dashboards."""

    __tablename__ = "safety_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    bot_id: Mapped[int | None] = mapped_column(ForeignKey("bots.id", ondelete="CASCADE"), index=True)
    direction: Mapped[str] = mapped_column(String(10))  # input, output
    action: Mapped[str] = mapped_column(String(10))  # block, flag
    categories: Mapped[str] = mapped_column(String(200))  # comma-separated
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
