"""Public channel limits: per client address of a bot and per bot, in clock-minute windows in the database."""
from lmforge.bots import ratelimit, service
from lmforge.bots.tables import ChannelWindow

NOW = 1_800_000_000.0 + 15  # 15 s into a minute


def test_per_client_limit_with_retry_after(db):
    bot = service.create_bot(db, 1).id
    assert [ratelimit.admit(db, bot, "1.2.3.4", 3, 0, now=NOW) for _ in range(3)] == [None] * 3
    assert ratelimit.admit(db, bot, "1.2.3.4", 3, 0, now=NOW) == "45"  # until the next minute
    assert ratelimit.admit(db, bot, "5.6.7.8", 3, 0, now=NOW) is None  # another client
    other = service.create_bot(db, 1).id
    assert ratelimit.admit(db, other, "1.2.3.4", 3, 0, now=NOW) is None  # the same client, another bot
    assert ratelimit.admit(db, bot, "1.2.3.4", 3, 0, now=NOW + 45) is None  # a new minute


def test_per_bot_limit_counts_only_admitted_clients(db):
    bot = service.create_bot(db, 1).id
    for _ in range(5):  # a flooding client is refused by its own limit and does not use up the bot's
        ratelimit.admit(db, bot, "flood", 2, 4, now=NOW)
    assert ratelimit.admit(db, bot, "a", 2, 4, now=NOW) is None
    assert ratelimit.admit(db, bot, "b", 2, 4, now=NOW) is None
    assert ratelimit.admit(db, bot, "c", 2, 4, now=NOW) is not None  # 2 + 2 admitted: the bot's 4 are used


def test_old_windows_are_deleted(db):
    bot = service.create_bot(db, 1).id
    ratelimit.admit(db, bot, "a", 5, 5, now=NOW)
    ratelimit.admit(db, bot, "b", 5, 5, now=NOW + 180)
    with db.session() as s:
        windows = {w for (w,) in s.query(ChannelWindow.window)}
    assert windows == {int((NOW + 180) // 60)}
