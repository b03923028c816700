"""Prices, usage records and limits: per-key requests and tokens per minute, and budgets.

Limit state lives in the database (`rate_windows`: one row per key and clock minute, updated with one
atomic upsert), so every server process sharing the database enforces the same limits."""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, func, select, update

from ..store import ApiKey, Database, RateWindow, Usage
from .errors import APIError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: float = Field(ge=0, description="USD per 1,000 prompt tokens")
    completion: float = Field(ge=0, description="USD per 1,000 completion tokens")


class PriceTable(BaseModel):
    """The schema of prices.yaml."""

    model_config = ConfigDict(extra="forbid")
    currency: str = "USD"
    default: Price
    models: dict[str, Price] = {}

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p = self.models.get(model, self.default)
        return (prompt_tokens * p.prompt + completion_tokens * p.completion) / 1000


def load_prices(path: Path | None = None) -> PriceTable:
    path = Path(path or DEFAULT_PRICES)
    try:
        return PriceTable.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ValueError(f"price table {path} does not exist") from None
    except (yaml.YAMLError, ValidationError) as e:
        raise ValueError(f"price table {path} is invalid: {e}") from None


# ------------------------------------------------------------------------------------------- limits


def count(session, table, keys: dict[str, object], **add: int) -> tuple[int, ...]:
    """Add `add` to the counters of the row of `table` with primary key `keys` (created at zero), atomically;
    returns the row's new counters in `add`'s order. Used for the keys' minute windows here and the public
    bot channels' (bots/ratelimit.py)."""
    dialect = session.bind.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases: read-modify-write inside the transaction
        row = session.execute(select(table).where(*(table.c[k] == v for k, v in keys.items()))
                              .with_for_update()).first()
        values = {k: (getattr(row, k) if row is not None else 0) + v for k, v in add.items()}
        if row is None:
            session.execute(table.insert().values(**keys, **values))
        else:
            session.execute(table.update().where(*(table.c[k] == v for k, v in keys.items())).values(**values))
        return tuple(values.values())
    stmt = insert(table).values(**keys, **add)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={k: table.c[k] + stmt.excluded[k] for k in add},
    ).returning(*(table.c[k] for k in add))
    return tuple(session.execute(stmt).one())


def _upsert(session, key_id: int, window: int, requests: int, tokens: int) -> tuple[int, int]:
    """Add to a key's minute window atomically; returns the window's new (requests, tokens)."""
    return count(session, RateWindow.__table__, {"key_id": key_id, "window": window}, requests=requests, tokens=tokens)


def retry_after(now: float) -> str:
    """Seconds until the next clock minute, when a minute window's count starts again (at least 1)."""
    return str(max(1, math.ceil((int(now // 60) + 1) * 60 - now)))


def admit(db: Database, key: ApiKey, prompt_tokens: int, now: float | None = None) -> None:
    """Count one request against the key's limits, or raise 429 (with Retry-After) if it would exceed them."""
    now = time.time() if now is None else now
    window = int(now // 60)
    retry = {"Retry-After": retry_after(now)}
    with db.session() as s:
        spent = s.scalar(select(ApiKey.spent_usd).where(ApiKey.id == key.id))
        if key.budget_usd is not None and spent >= key.budget_usd:
            raise APIError(429, f"You exceeded your budget of ${key.budget_usd:.2f} (spent ${spent:.4f}); "
                                "ask the administrator for a new key or a higher budget.",
                           type="insufficient_quota", code="insufficient_quota")
        requests, tokens = _upsert(s, key.id, window, 1, 0)
    if key.rpm is not None and requests > key.rpm:
        raise APIError(429, f"Rate limit reached for requests: limit {key.rpm} per minute, used {requests - 1}. "
                            f"Try again in {retry['Retry-After']} s.",
                       type="requests", code="rate_limit_exceeded", headers=retry)
    if key.tpm is not None and tokens + prompt_tokens > key.tpm:
        raise APIError(429, f"Rate limit reached for tokens: limit {key.tpm} per minute, used {tokens}, "
                            f"requested {prompt_tokens}. Try again in {retry['Retry-After']} s.",
                       type="tokens", code="rate_limit_exceeded", headers=retry)


def record(db: Database, prices: PriceTable, key_id: int, model: str, endpoint: str, prompt_tokens: int,
           completion_tokens: int, now: float | None = None) -> float:
    """Store one request's usage, add its cost to the key's spending and its tokens to the minute window."""
    now = time.time() if now is None else now
    cost = prices.cost(model, prompt_tokens, completion_tokens)
    with db.session() as s:
        s.add(Usage(key_id=key_id, model=model, endpoint=endpoint, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, cost_usd=cost,
                    created_at=datetime.fromtimestamp(now, timezone.utc)))
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(spent_usd=ApiKey.spent_usd + cost))
        window = int(now // 60)
        _upsert(s, key_id, window, 0, prompt_tokens + completion_tokens)
        s.execute(delete(RateWindow).where(RateWindow.key_id == key_id, RateWindow.window < window - 1))
    return cost


def usage_report(db: Database, key_id: int | None = None, start: datetime | None = None,
                 end: datetime | None = None) -> list[dict]:
    """Requests, tokens and cost per key and model, for one key or all, over [start, end)."""
    q = (select(ApiKey.name, Usage.model, func.count(Usage.id), func.sum(Usage.prompt_tokens),
                func.sum(Usage.completion_tokens), func.sum(Usage.cost_usd))
         .join(ApiKey, ApiKey.id == Usage.key_id).group_by(ApiKey.name, Usage.model).order_by(ApiKey.name, Usage.model))
    if key_id is not None:
        q = q.where(Usage.key_id == key_id)
    if start is not None:
        q = q.where(Usage.created_at >= start)
    if end is not None:
        q = q.where(Usage.created_at < end)
    with db.session() as s:
        rows = s.execute(q).all()
    return [dict(key=k, model=m, requests=n, prompt_tokens=int(p or 0), completion_tokens=int(c or 0),
                 total_tokens=int((p or 0) + (c or 0)), cost_usd=float(cost or 0)) for k, m, n, p, c, cost in rows]
