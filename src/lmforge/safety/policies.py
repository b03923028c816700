"""Filter policies and safety events in the database: one policy per API key or bot (`safety_policies`), and
one row per blocked or flagged text (`safety_events`) so dashboards can count them per key or bot and day."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store import Database, SafetyEvent, SafetyPolicy
from .filters import FilterPolicy, summary
from .moderation import Decision


def _owner(key_id: int | None, bot_id: int | None):
    if (key_id is None) == (bot_id is None):
        raise ValueError("a policy belongs to exactly one of a key or a bot")
    return SafetyPolicy.key_id == key_id if key_id is not None else SafetyPolicy.bot_id == bot_id


def put_policy(s: Session, policy: FilterPolicy, *, key_id: int | None = None, bot_id: int | None = None) -> None:
    """Store (or replace) the policy of a key or a bot inside the caller's transaction (e.g. the key's own)."""
    data = json.dumps(policy.to_dict())
    row = s.scalar(select(SafetyPolicy).where(_owner(key_id, bot_id)))
    if row is None:
        s.add(SafetyPolicy(key_id=key_id, bot_id=bot_id, policy=data, updated_at=datetime.now(timezone.utc)))
    else:
        row.policy, row.updated_at = data, datetime.now(timezone.utc)


def set_policy(db: Database, policy: FilterPolicy, *, key_id: int | None = None, bot_id: int | None = None) -> None:
    with db.session() as s:
        put_policy(s, policy, key_id=key_id, bot_id=bot_id)


def get_policy(db: Database, *, key_id: int | None = None, bot_id: int | None = None) -> FilterPolicy:
    """The stored policy of a key or bot, or the default (flag only, conversations redacted)."""
    with db.session() as s:
        data = s.scalar(select(SafetyPolicy.policy).where(_owner(key_id, bot_id)))
    return FilterPolicy.from_dict(json.loads(data)) if data else FilterPolicy()


def record_events(db: Database, decisions: dict[str, Decision], *, key_id: int | None = None,
                  bot_id: int | None = None) -> None:
    """Store the blocked or flagged ones of {"input": decision, "output": decision}; allowed ones are not events."""
    rows = [SafetyEvent(key_id=key_id, bot_id=bot_id, direction=direction, action=d.action,
                        categories=",".join(summary(d)["categories"]))
            for direction, d in decisions.items() if d.action in ("block", "flag")]
    if rows:
        with db.session() as s:
            s.add_all(rows)


def safety_counts(db: Database, *, key_id: int | None = None, bot_id: int | None = None,
                  start: datetime | None = None, end: datetime | None = None) -> list[dict]:
    """Blocked and flagged texts per day (UTC), per key or bot (both when neither is given), oldest first:
    [{"day": "2025-01-31", "key_id": 3, "bot_id": None, "blocked": 2, "flagged": 5}, ...]. The dashboards'
    query; days without events are absent."""
    q = select(SafetyEvent.created_at, SafetyEvent.key_id, SafetyEvent.bot_id, SafetyEvent.action)
    if key_id is not None:
        q = q.where(SafetyEvent.key_id == key_id)
    if bot_id is not None:
        q = q.where(SafetyEvent.bot_id == bot_id)
    if start is not None:
        q = q.where(SafetyEvent.created_at >= start)
    if end is not None:
        q = q.where(SafetyEvent.created_at < end)
    counts: dict[tuple, dict] = defaultdict(lambda: {"blocked": 0, "flagged": 0})
    with db.session() as s:
        # grouped in Python: the day of a timestamp is spelled differently in every SQL dialect
        for t, k, b, action in s.execute(q):
            t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # SQLite hands back naive UTC
            day = t.astimezone(timezone.utc).strftime("%Y-%m-%d")
            counts[(day, k, b)]["blocked" if action == "block" else "flagged"] += 1
    order = sorted(counts, key=lambda g: (g[0], g[1] or 0, g[2] or 0))
    return [{"day": day, "key_id": k, "bot_id": b, **counts[(day, k, b)]} for day, k, b in order]

