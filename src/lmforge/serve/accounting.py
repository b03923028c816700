"""Prices, usage records and limits: per-key requests and tokens per minute, and budgets.

Limit state lives in the database (`rate_windows`: one row per key and clock minute, updated with one
atomic upsert), so every server process sharing the database enforces the same limits. Limits are a sliding
window over the last two minute rows, and admission *reserves*: a request's prompt plus its `max_tokens`
count against tpm, and its most possible cost against the budget, before it runs (`reserve`); `settle`
replaces the reservation by what it used. So neither a burst nor one large request can overshoot a limit.
A server killed between the two leaves the reservation in place: limits fail closed."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
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


@dataclass
class Limit:
    """One of a key's limits as admission saw it: what `x-ratelimit-*` headers report."""

    name: str  # requests | tokens
    limit: int
    used: float  # the sliding-window estimate, this request included
    reset: float  # seconds until the window estimate is back to zero

    @property
    def remaining(self) -> int:
        return max(0, int(self.limit - self.used))


@dataclass
class Reservation:
    """What admission set aside for a request; `settle` replaces it with what the request really used."""

    key_id: int
    model: str
    endpoint: str
    prompt_tokens: int
    tokens: int  # prompt + the most completion tokens the request may make, counted in `window`
    cost: float  # its most possible cost, added to the key's spending (0 when the key has no budget)
    window: int
    limits: list[Limit] = field(default_factory=list)
    settled: bool = False

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers, for the limits the key has."""
        out = {}
        for lim in self.limits:
            out[f"x-ratelimit-limit-{lim.name}"] = str(lim.limit)
            out[f"x-ratelimit-remaining-{lim.name}"] = str(lim.remaining)
            out[f"x-ratelimit-reset-{lim.name}"] = f"{max(0.0, lim.reset):.3g}s"
        return out


def _sliding(prev: int, cur: int, frac: float) -> float:
    """The sliding-window estimate (Cloudflare's): the previous minute weighted by how much of it still lies
    inside the last 60 s, plus the current minute. Unlike clock minutes, it never lets 2x the limit through
    across a minute boundary."""
    return prev * (1 - frac) + cur


def _wait(limit: int, need: int, prev: int, cur: int, frac: float) -> float:
    """Seconds until `need` more fits under `limit` given the previous and current minutes' counts (this
    request not included), if nothing else arrives: the previous minute's share decays over this minute, then
    the current minute's over the next. 60 when it never fits (a request larger than the limit)."""
    left = 60 * (1 - frac)

    def estimate(t: float) -> float:
        return prev * (1 - frac - t / 60) + cur if t <= left else cur * max(0.0, 1 - (t - left) / 60)

    if need > limit:
        return 60.0
    lo, hi = 0.0, left + 60
    for _ in range(40):  # estimate() falls monotonically: bisect
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if estimate(mid) + need <= limit else (mid, hi)
    return hi


def reserve(db: Database, key: ApiKey, prices: PriceTable, model: str, endpoint: str, prompt_tokens: int,
            max_completion_tokens: int, now: float | None = None) -> Reservation:
    """Admit one request against the key's limits *before* it runs, or raise 429 with Retry-After: the
    request, its prompt and all `max_completion_tokens` it may generate count against rpm and tpm, and its
    most possible cost against the budget. One transaction (writes first, so SQLite takes its write lock at
    once): concurrent admissions, from any process on the database, are serialized per key and a refused
    request leaves no trace. `settle` then gives back what the request did not use."""
    now = time.time() if now is None else now
    window, frac = int(now // 60), (now % 60) / 60
    tokens = prompt_tokens + max_completion_tokens
    cost = prices.cost(model, prompt_tokens, max_completion_tokens) if key.budget_usd is not None else 0.0
    with db.session() as s:
        if key.budget_usd is not None:
            spent = s.execute(update(ApiKey).where(ApiKey.id == key.id).values(spent_usd=ApiKey.spent_usd + cost)
                              .returning(ApiKey.spent_usd)).scalar_one()
            if spent > key.budget_usd + 1e-12:
                before = spent - cost
                raise APIError(429, f"This request could cost up to ${cost:.6f} and your budget of "
                                    f"${key.budget_usd:.2f} has ${max(0.0, key.budget_usd - before):.6f} left; lower "
                                    "max_tokens, or ask the administrator for a higher budget.",
                               type="insufficient_quota", code="insufficient_quota")
        requests, used = _upsert(s, key.id, window, 1, tokens)
        prev = s.execute(select(RateWindow.requests, RateWindow.tokens)
                         .where(RateWindow.key_id == key.id, RateWindow.window == window - 1)).first() or (0, 0)
        limits = []
        for name, limit, p, cur, need in (("requests", key.rpm, prev[0], requests, 1),
                                           ("tokens", key.tpm, prev[1], used, tokens)):
            if limit is None:
                continue
            estimate = _sliding(p, cur, frac)
            if estimate > limit:
                wait = _wait(limit, need, p, cur - need, frac)
                retry = str(max(1, math.ceil(wait)))
                what = f"{need} tokens (the prompt and max_tokens)" if name == "tokens" else "1 request"
                raise APIError(429, f"Rate limit reached for {name}: limit {limit} per minute, used "
                                    f"{estimate - need:.0f}, requested {what}. Try again in {retry} s.",
                               type=name, code="rate_limit_exceeded",
                               headers={"Retry-After": retry, f"x-ratelimit-limit-{name}": str(limit),
                                        f"x-ratelimit-remaining-{name}": str(max(0, int(limit - estimate + need))),
                                        f"x-ratelimit-reset-{name}": f"{wait:.3g}s"})
            limits.append(Limit(name, limit, estimate, 60 * (1 - frac) + (60 if cur else 0)))
    return Reservation(key.id, model, endpoint, prompt_tokens, tokens, cost, window, limits)


def settle(db: Database, prices: PriceTable, r: Reservation, completion_tokens: int, prompt_tokens: int | None = None,
           now: float | None = None) -> float:
    """Replace a reservation by what the request used: store its usage (prompt and completion tokens, cost),
    give back the unused tokens to the window they were reserved in and the unused cost to the budget.
    Settling twice does nothing. Returns the cost."""
    if r.settled:
        return 0.0
    r.settled = True
    now = time.time() if now is None else now
    prompt_tokens = r.prompt_tokens if prompt_tokens is None else prompt_tokens
    cost = prices.cost(r.model, prompt_tokens, completion_tokens)
    with db.session() as s:
        s.add(Usage(key_id=r.key_id, model=r.model, endpoint=r.endpoint, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, cost_usd=cost,
                    created_at=datetime.fromtimestamp(now, timezone.utc)))
        s.execute(update(ApiKey).where(ApiKey.id == r.key_id).values(spent_usd=ApiKey.spent_usd + cost - r.cost))
        _upsert(s, r.key_id, r.window, 0, prompt_tokens + completion_tokens - r.tokens)
        s.execute(delete(RateWindow).where(RateWindow.key_id == r.key_id, RateWindow.window < int(now // 60) - 1))
    return cost


def release(db: Database, r: Reservation) -> None:
    """Undo a reservation for a request that never ran (refused by the policy or the queue): nothing is
    billed, its tokens and cost are given back; the request itself still counts against rpm."""
    if r.settled:
        return
    r.settled = True
    with db.session() as s:
        if r.cost:
            s.execute(update(ApiKey).where(ApiKey.id == r.key_id).values(spent_usd=ApiKey.spent_usd - r.cost))
        _upsert(s, r.key_id, r.window, 0, -r.tokens)


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
