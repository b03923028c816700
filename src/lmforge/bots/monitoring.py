"""What a bot's owner sees on the monitor page: conversations and messages per day, fallback rate, top
questions, unanswered questions grouped by similarity, thumbs up/down, latency, texts its safety policy
blocked or flagged (safety/policies.py); charts as inline SVG (text in them escaped), exports as CSV or JSONL."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from html import escape

import numpy as np
from sqlalchemy import select

from ..safety.policies import safety_counts
from ..store import Database
from .tables import Bot, Conversation, Feedback, Message

MAX_GROUPED = 300
"""The most recent unanswered questions grouped on the monitor page (embedding them takes a moment)."""


def _day(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _rows(db: Database, bot: Bot, since: datetime | None = None):
    q = (select(Message, Conversation.channel, Feedback.rating)
         .join(Conversation, Conversation.id == Message.conversation_id)
         .outerjoin(Feedback, Feedback.message_id == Message.id)
         .where(Message.bot_id == bot.id).order_by(Message.id))
    if since is not None:
        q = q.where(Message.created_at >= since)
    with db.session() as s:
        return s.execute(q).all()


def stats(db: Database, bot: Bot, days: int = 14, embedder=None) -> dict:
    since = datetime.now(timezone.utc) - timedelta(days=days)
    rows = _rows(db, bot, since)
    today = datetime.now(timezone.utc).date()
    labels = [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    msgs_per_day, convs_per_day = Counter(), defaultdict(set)
    for m, _, _ in rows:
        msgs_per_day[_day(m.created_at)] += 1
        convs_per_day[_day(m.created_at)].add(m.conversation_id)
    fallback = [m for m, _, _ in rows if m.source == "fallback"]
    latencies = np.array([m.latency_ms for m, _, _ in rows]) if rows else np.zeros(0)
    up = sum(1 for *_, r in rows if r == 1)
    down = sum(1 for *_, r in rows if r == -1)
    top = Counter(m.question.strip().lower() for m, _, _ in rows).most_common(10)
    unanswered = [m for m, _, r in rows if (m.source == "fallback" or r == -1) and not m.resolved][-MAX_GROUPED:]
    safety = {c["day"]: c for c in safety_counts(db, bot_id=bot.id, start=since)}
    return dict(
        days=labels,
        messages_per_day=[msgs_per_day[d] for d in labels],
        conversations_per_day=[len(convs_per_day[d]) for d in labels],
        messages=len(rows),
        conversations=len({m.conversation_id for m, _, _ in rows}),
        fallback_rate=len(fallback) / len(rows) if rows else 0.0,
        thumbs_up=up, thumbs_down=down,
        blocked_per_day=[safety.get(d, {}).get("blocked", 0) for d in labels],
        flagged_per_day=[safety.get(d, {}).get("flagged", 0) for d in labels],
        blocked=sum(c["blocked"] for c in safety.values()), flagged=sum(c["flagged"] for c in safety.values()),
        latency_p50=float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
        latency_p95=float(np.percentile(latencies, 95)) if len(latencies) else 0.0,
        top_questions=top,
        unanswered_groups=group_similar(unanswered, embedder),
        recent=[dict(id=m.id, question=m.question, answer=m.answer, source=m.source, intent=m.intent,
                     document=m.document, confidence=m.confidence, rating=r, channel=ch, resolved=m.resolved,
                     created_at=m.created_at.strftime("%Y-%m-%d %H:%M"))
                for m, ch, r in reversed(rows[-50:])],
    )


def group_similar(messages: list, embedder=None, threshold: float = 0.7) -> list[list]:
    """Greedy single-pass clustering of questions by embedding similarity (or exact text without an
    embedder); largest groups first. Each group is a list of messages."""
    if not messages:
        return []
    if embedder is None:
        groups = defaultdict(list)
        for m in messages:
            groups[m.question.strip().lower()].append(m)
        return sorted(groups.values(), key=len, reverse=True)
    vecs = embedder.encode([m.question for m in messages])
    centres, groups = [], []
    for m, v in zip(messages, vecs):
        if centres:
            sims = np.array(centres) @ v
            best = int(sims.argmax())
            if sims[best] >= threshold:
                groups[best].append(m)
                continue
        centres.append(v)
        groups.append([m])
    return sorted(groups, key=len, reverse=True)


def bar_chart(labels: list[str], values: list[float], title: str, width: int = 560, height: int = 180) -> str:
    """A small SVG bar chart; every piece of text is escaped (labels could come from users)."""
    n = max(1, len(values))
    top = max(values) if values and max(values) > 0 else 1
    pad_l, pad_b, pad_t = 30, 34, 22
    bw = (width - pad_l - 10) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="{pad_l}" y="14" class="chart-title">{escape(title)}</text>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end" class="chart-axis">{top:g}</text>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 10}" y2="{height - pad_b}" class="chart-axis-line"/>']
    inner = height - pad_b - pad_t
    for i, (label, v) in enumerate(zip(labels, values)):
        h = inner * v / top
        x = pad_l + i * bw
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - pad_b - h:.1f}" width="{max(1, bw - 4):.1f}" '
                     f'height="{h:.1f}" class="chart-bar"><title>{escape(label)}: {v:g}</title></rect>')
        if n <= 16 or i % 2 == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - pad_b + 14}" text-anchor="middle" '
                         f'class="chart-label">{escape(label[-5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


EXPORT_FIELDS = ["conversation_id", "channel", "message_id", "created_at", "question", "answer", "source",
                 "intent", "document", "confidence", "latency_ms", "rating"]


def export_rows(db: Database, bot: Bot) -> list[dict]:
    return [dict(conversation_id=m.conversation_id, channel=ch, message_id=m.id,
                 created_at=m.created_at.isoformat(), question=m.question, answer=m.answer, source=m.source,
                 intent=m.intent, document=m.document, confidence=round(m.confidence, 4),
                 latency_ms=round(m.latency_ms, 1), rating=r) for m, ch, r in _rows(db, bot)]


def export_csv(db: Database, bot: Bot) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS)
    w.writeheader()
    for row in export_rows(db, bot):
        # neutralise spreadsheet formulas in user text (CSV injection)
        w.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()})
    return buf.getvalue()


def export_jsonl(db: Database, bot: Bot) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in export_rows(db, bot))
