"""Rate limits of the public bot channels (REST, widget, webhook): requests per minute per client address
of a bot, and per bot over all its clients. The widget's token is public, so anyone can call a bot; these
limits keep one visitor (or one leaked token) from flooding it. Counted in the database with the API's own
minute windows (`serve/accounting.count`), so every server process enforces the same limits."""
from __future__ import annotations

import time

from sqlalchemy import delete

from ..serve.accounting import count, retry_after
from ..store import Database
from .tables import ChannelWindow

_purged = [0]  # the last minute this process deleted old windows in


def admit(db: Database, bot_id: int, address: str, per_client: int, per_bot: int,
          now: float | None = None) -> str | None:
    """Count one request; None if it is allowed, else the Retry-After value (seconds) for the 429. A limit of
    0 turns that limit off."""
    now = time.time() if now is None else now
    window = int(now // 60)
    table, used_by_all = ChannelWindow.__table__, 0
    with db.session() as s:
        (used,) = count(s, table, {"bucket": f"bot:{bot_id}:{address}"[:120], "window": window}, requests=1)
        # a client over its own limit is not counted against the bot's, so it cannot use up everyone's share
        if not per_client or used <= per_client:
            (used_by_all,) = count(s, table, {"bucket": f"bot:{bot_id}", "window": window}, requests=1)
        if _purged[0] < window:  # once a minute: windows before the last one are never read again
            _purged[0] = window
            s.execute(delete(ChannelWindow).where(ChannelWindow.window < window - 1))
    if (per_client and used > per_client) or (per_bot and used_by_all > per_bot):
        return retry_after(now)
    return None
