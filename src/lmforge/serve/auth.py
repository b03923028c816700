"""API keys: created with `secrets`, stored as SHA-256 digests, compared with `secrets.compare_digest`.

A key looks like `lmf-<prefix 8>-<secret>`; the public prefix finds the row, the digest of the whole key is
compared in constant time, and the key itself is never stored or logged."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from fastapi import Request
from sqlalchemy import select

from ..safety.filters import FilterPolicy
from ..safety.policies import put_policy
from ..store import ApiKey, Database
from .errors import APIError

PREFIX_LEN = 12  # "lmf-" + 8 characters


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return f"lmf-{secrets.token_hex(4)}-{secrets.token_urlsafe(32)}"


def create_key(db: Database, name: str, rpm: int | None = None, tpm: int | None = None,
               budget_usd: float | None = None, key: str | None = None,
               policy: FilterPolicy | None = None) -> tuple[ApiKey, str]:
    """Register a key (a new random one unless `key` is given) with its filter policy (None: the default),
    in one transaction; returns the row and the key, shown once."""
    key = key or new_key()
    for limit, value in (("rpm", rpm), ("tpm", tpm), ("budget", budget_usd)):
        if value is not None and value < 0:
            raise ValueError(f"{limit} must not be negative")
    with db.session() as s:
        if s.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
            raise ValueError(f"a key named {name!r} already exists")
        row = ApiKey(name=name, prefix=key[:PREFIX_LEN], digest=digest(key), rpm=rpm, tpm=tpm,
                     budget_usd=budget_usd, spent_usd=0.0)
        s.add(row)
        if policy is not None:
            s.flush()
            put_policy(s, policy, key_id=row.id)
    return row, key


def find_key(db: Database, presented: str) -> ApiKey | None:
    """The active key matching `presented`, or None. The digest comparison takes constant time."""
    want = digest(presented)
    with db.session() as s:
        candidates = s.scalars(select(ApiKey).where(ApiKey.prefix == presented[:PREFIX_LEN])).all()
    match = None
    for row in candidates:
        if secrets.compare_digest(row.digest, want):
            match = row
    return match if match is not None and match.revoked_at is None else None


def list_keys(db: Database) -> list[ApiKey]:
    with db.session() as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(db: Database, name: str) -> ApiKey:
    with db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.name == name))
        if row is None:
            raise ValueError(f"no key named {name!r}")
        row.revoked_at = datetime.now(timezone.utc)
    return row


def require_key(request: Request) -> ApiKey:
    """FastAPI dependency: the caller's key from `Authorization: Bearer ...`, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
                            "(create one with `lmforge keys create`).", code="missing_api_key")
    key = find_key(request.app.state.lmforge.db, token.strip())
    if key is None:
        raise APIError(401, f"Incorrect API key provided: {token.strip()[:PREFIX_LEN]}…. "
                            "Check the key, or create a new one with `lmforge keys create`.", code="invalid_api_key")
    return key
