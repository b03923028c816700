"""GET /v1/usage: the caller's own tokens and cost per model over a period (never another key's), and, as an
lmforge extension (`safety`), its blocked and flagged texts per day."""
from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from ...safety.policies import safety_counts
from ...store import ApiKey
from .. import protocol as p
from ..accounting import usage_report
from ..auth import require_key
from ..errors import APIError
from .openai import state

router = APIRouter(prefix="/v1", tags=["usage"])


class SafetyDay(BaseModel):
    day: str  # YYYY-MM-DD, UTC
    blocked: int
    flagged: int


class UsageWithSafety(p.UsageReport):
    safety: list[SafetyDay]


MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime (and every database) holds


def parse_time(value: str | None, param: str) -> datetime | None:
    """Unix seconds (0 to year 9999) or an ISO 8601 date/time (UTC if no zone is given)."""
    if value is None:
        return None
    bad = APIError(400, f"Invalid value for '{param}': give unix seconds (0 to {MAX_SECONDS}) or an ISO 8601 date.",
                   param=param, code="invalid_value")
    try:
        if value.replace(".", "", 1).isdigit():
            seconds = float(value)
            if not 0 <= seconds <= MAX_SECONDS:
                raise bad
            t = datetime.fromtimestamp(seconds, timezone.utc)
        else:
            t = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise bad from None
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    try:  # an aware time near year 1 or 9999 can fall outside the range once moved to UTC
        in_range = 0 <= t.timestamp() <= MAX_SECONDS
    except (OverflowError, ValueError, OSError):
        in_range = False
    if not in_range:
        raise bad
    return t


@router.get("/usage", response_model=UsageWithSafety)
async def usage(start: str | None = None, end: str | None = None, key: ApiKey = Depends(require_key),
                s=Depends(state)):
    t0, t1 = parse_time(start, "start"), parse_time(end, "end")
    rows = await run_in_threadpool(usage_report, s.db, key.id, t0, t1)
    data = [p.UsageRow(**{k: v for k, v in r.items() if k != "key"}) for r in rows]
    days = await run_in_threadpool(safety_counts, s.db, key_id=key.id, start=t0, end=t1)
    return UsageWithSafety(key=key.name, start=int(t0.timestamp()) if t0 else None,
                           end=int(t1.timestamp()) if t1 else None, data=data,
                           total_cost_usd=sum(r.cost_usd for r in data),
                           safety=[SafetyDay(day=d["day"], blocked=d["blocked"], flagged=d["flagged"]) for d in days])
