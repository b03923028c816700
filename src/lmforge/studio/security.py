"""Passwords (scrypt), sessions (random cookie, digest in the database), CSRF tokens, sign-in rate limits,
and the admin account created on first start."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select

from ..bots.tables import LoginFailure, Membership, StudioSession, User, Workspace
from ..store import Database

log = logging.getLogger(__name__)

SCRYPT = dict(n=2 ** 14, r=8, p=1)  # OWASP's minimum for scrypt; ~50 ms on one core


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${h.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, want = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got.hex(), want)


# A hash to verify against when the username does not exist, so timing does not reveal which usernames do.
_DUMMY = None


def _dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password(secrets.token_hex(8))
    return _DUMMY


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)  # SQLite returns naive datetimes


# --------------------------------------------------------------------------------------------- accounts


def create_user(db: Database, username: str, password: str, workspace: str | None = None,
                is_admin: bool = False) -> User:
    """A user and (if `workspace` is given) their membership of it, creating the workspace if needed."""
    username = username.strip()
    if not username or len(username) > 100:
        raise ValueError("a username needs 1 to 100 characters")
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    with db.session() as s:
        if s.scalar(select(User).where(User.username == username)) is not None:
            raise ValueError(f"the username {username!r} is taken")
        user = User(username=username, password=hash_password(password), is_admin=is_admin)
        s.add(user)
        s.flush()
        if workspace:
            ws = s.scalar(select(Workspace).where(Workspace.name == workspace))
            if ws is None:
                ws = Workspace(name=workspace)
                s.add(ws)
                s.flush()
            s.add(Membership(user_id=user.id, workspace_id=ws.id))
    return user


def ensure_admin(db: Database) -> str | None:
    """On first start (no studio user yet) create `admin` in the workspace `default` with a random password,
    and return the password (to print once); otherwise None."""
    with db.session() as s:
        if s.scalar(select(func.count(User.id))):
            return None
    password = secrets.token_urlsafe(12)
    create_user(db, "admin", password, workspace="default", is_admin=True)
    return password


def announce_admin(db: Database, console, settings) -> None:
    """For `lmforge serve`: create the admin account on first start and show its password, once."""
    password = ensure_admin(db)
    if password is not None:
        console.print(f"[bold]The studio's admin account was created[/] (sign in at "
                      f"http://{settings.host}:{settings.port}/studio/ as [bold]admin[/]; the password is shown "
                      "only this once):")
        console.print(f"    {password}", soft_wrap=True)


def workspaces_of(db: Database, user_id: int) -> list[Workspace]:
    with db.session() as s:
        return list(s.scalars(select(Workspace).join(Membership, Membership.workspace_id == Workspace.id)
                              .where(Membership.user_id == user_id).order_by(Workspace.name)))


# ----------------------------------------------------------------------------------- rate-limited sign-in


class TooManyAttempts(Exception):
    pass


def authenticate(db: Database, username: str, password: str, address: str, max_failures: int,
                 window_s: int) -> User | None:
    """The user if the password is right. Raises TooManyAttempts once `max_failures` failures for this
    username, or 4x that from this address, happened within the window (checked before the password,
    so a correct guess after the limit is refused too)."""
    since = now() - timedelta(seconds=window_s)
    with db.session() as s:
        s.execute(delete(LoginFailure).where(LoginFailure.created_at < since))
        by_user = s.scalar(select(func.count(LoginFailure.id)).where(LoginFailure.username == username[:100],
                                                                       LoginFailure.created_at >= since))
        by_addr = s.scalar(select(func.count(LoginFailure.id)).where(LoginFailure.address == address[:64],
                                                                       LoginFailure.created_at >= since))
        if by_user >= max_failures or by_addr >= 4 * max_failures:
            raise TooManyAttempts()
        user = s.scalar(select(User).where(User.username == username))
    ok = verify_password(password, user.password if user else _dummy_hash())
    if user is not None and ok:
        return user
    with db.session() as s:
        s.add(LoginFailure(username=username[:100], address=address[:64]))
    return None


# ------------------------------------------------------------------------------------------ sessions


def start_session(db: Database, user: User, hours: int) -> str:
    """A new session for `user` in their first workspace; returns the cookie value (shown only to the browser)."""
    token = secrets.token_urlsafe(32)
    wss = workspaces_of(db, user.id)
    if not wss:
        raise ValueError("this account belongs to no workspace; ask the administrator to add it to one")
    with db.session() as s:
        s.execute(delete(StudioSession).where(StudioSession.expires_at < now()))
        s.add(StudioSession(digest=digest(token), user_id=user.id, workspace_id=wss[0].id,
                            csrf=secrets.token_urlsafe(32), expires_at=now() + timedelta(hours=hours)))
    return token


def find_session(db: Database, token: str | None) -> tuple[StudioSession, User] | None:
    if not token:
        return None
    with db.session() as s:
        row = s.get(StudioSession, digest(token))
        if row is None or aware(row.expires_at) < now():
            return None
        user = s.get(User, row.user_id)
        return row, user


def end_session(db: Database, token: str | None) -> None:
    if token:
        with db.session() as s:
            s.execute(delete(StudioSession).where(StudioSession.digest == digest(token)))


def csrf_ok(expected: str | None, presented: str | None) -> bool:
    return bool(expected) and bool(presented) and hmac.compare_digest(expected, presented)
