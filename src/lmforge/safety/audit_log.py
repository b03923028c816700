"""An append-only, hash-chained audit log of generations (JSON Lines).

Each line is one record with `seq`, `time`, `prev` (the previous record's hash) and `hash`, where
hash = HMAC-SHA256(key, canonical JSON of the record without `hash`) -- plain SHA-256 when no key is set.
Editing, deleting, inserting or reordering any line breaks the chain at that line and `verify` names it.
With a key kept outside the log (e.g. `LMFORGE_AUDIT_KEY`), someone who can write the file cannot re-chain
it after an edit; without one, the chain only detects accidental or naive edits. Cutting lines off the
*end* leaves a valid shorter chain: compare `head()` with a value kept elsewhere (`verify(expected_head=...)`)
to catch that.

Text is redacted (`pii.redact_text`) before it is written, on by default: every string value in a record
except the structural fields below is scrubbed, so the log never stores the PII the detector finds.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from .pii import redact_text

GENESIS = "0" * 64
# Values under these keys are identifiers or numbers we wrote ourselves: never redacted.
STRUCTURAL = frozenset({"seq", "time", "prev", "hash", "event", "model", "key_id", "bot", "request_id", "source",
                        "action", "categories", "endpoint", "finish_reason"})


class AuditError(ValueError):
    """A log that cannot be read or does not verify; the message names the line."""


def _canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _redact(value: Any, key: str | None = None) -> Any:
    if key in STRUCTURAL:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


@dataclass
class VerifyResult:
    ok: bool
    records: int
    head: str
    error: str | None = None
    line: int | None = None  # 1-based line of the first problem


class AuditLog:
    """`AuditLog(path, key=None, redact=True)`; `append(event, **fields)`, `verify()`, `read(since=...)`."""

    def __init__(self, path: str | Path, key: bytes | str | None = None, redact: bool = True):
        self.path = Path(path)
        self.key = key.encode() if isinstance(key, str) else key
        self.redact = redact

    def _digest(self, record: dict) -> str:
        data = _canonical(record)
        if self.key:
            return hmac.new(self.key, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    def append(self, event: str, **fields) -> dict:
        """Write one record (redacted when redaction is on) under an exclusive file lock; returns it."""
        if not event or not isinstance(event, str):
            raise AuditError("an audit record needs an event name")
        clash = {"seq", "time", "prev", "hash", "event"} & set(fields)
        if clash:
            raise AuditError(f"reserved audit fields: {', '.join(sorted(clash))}")
        body = _redact(fields) if self.redact else dict(fields)
        with self._open() as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                last = self._recovered_last(f)
                return self._write(f, last, event, body)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def repair(self) -> dict | None:
        """Cut a torn last line off now (what `append` would do first); returns what was done, or None."""
        if not self.path.exists():
            return None
        with self._open() as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                before = self.recovered
                self._recovered_last(f)
                return self.recovered if self.recovered is not before else None
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _open(self):
        """The log for appending, created private (0600, in a 0700 folder when that is new)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return open(self.path, "a+b", opener=lambda path, flags: os.open(path, flags, 0o600))

    def _write(self, f, last: dict | None, event: str, body: dict) -> dict:
        prev, seq = (GENESIS, 0) if last is None else (last["hash"], last["seq"] + 1)
        record = {"seq": seq, "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                  "event": event, **body, "prev": prev}
        record["hash"] = self._digest(record)
        f.seek(0, os.SEEK_END)
        f.write((json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
        return record

    def _recovered_last(self, f) -> dict | None:
        """The last record; when the file ends in a torn line (a crash mid-write: no newline, or not JSON),
        that line is cut off and an `audit_recovered` record saying so is appended first, so one torn write
        never stops every later generation from being audited. Refuses (AuditError) when what precedes the
        torn line is not a record either: that is damage or tampering, for `verify` to report."""
        try:
            last = _last_line(f)
            if last is None or _ends_with_newline(f):
                return last
            f.seek(0, os.SEEK_END)  # a whole record that lost only its newline: keep it
            f.write(b"\n")
            return last
        except AuditError:
            pass
        size, keep = _torn_tail(f)
        last = _last_line_before(f, keep)
        os.ftruncate(f.fileno(), keep)
        self.recovered = {"dropped_bytes": size - keep, "at": datetime.now(timezone.utc).isoformat()}
        return self._write(f, last, "audit_recovered", {"dropped_bytes": size - keep, "reason": "torn last line"})

    recovered: dict | None = None  # set when this process cut a torn tail off the log

    def log_generation(self, *, model: str, prompt: str, completion: str, key_id: str | None = None,
                       bot: str | None = None, params: dict | None = None, prompt_tokens: int = 0,
                       completion_tokens: int = 0, moderation: dict | None = None,
                       watermark: dict | None = None, request_id: str | None = None) -> dict:
        """The record the API writes for every generation (issue 7, section 6)."""
        return self.append("generation", request_id=request_id, key_id=key_id, bot=bot, model=model,
                           params=params or {}, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                           moderation=moderation or {}, watermark=watermark or {}, prompt=prompt,
                           completion=completion)

    def verify(self, expected_head: str | None = None) -> VerifyResult:
        """Recompute the chain; the first broken line is reported (never raises for tampering)."""
        prev, n = GENESIS, 0
        if not self.path.exists():
            return VerifyResult(expected_head in (None, GENESIS), 0, GENESIS,
                                None if expected_head in (None, GENESIS) else "the log file is missing")
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    stored = record.pop("hash")
                except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
                    return VerifyResult(False, n, prev, "not a JSON audit record", lineno)
                if record.get("seq") != n or record.get("prev") != prev:
                    return VerifyResult(False, n, prev, "record out of sequence (a line was removed, inserted or moved)", lineno)
                if not hmac.compare_digest(self._digest(record), stored):
                    return VerifyResult(False, n, prev, "hash mismatch (the line was edited)", lineno)
                prev, n = stored, n + 1
        if expected_head is not None and not hmac.compare_digest(expected_head, prev):
            return VerifyResult(False, n, prev, "the chain ends before the expected head (lines were cut off the end)")
        return VerifyResult(True, n, prev)

    def head(self) -> str:
        return self.verify().head

    def read(self, since: datetime | None = None, until: datetime | None = None,
             event: str | None = None) -> Iterator[dict]:
        """Records in order, filtered by time (inclusive `since`, exclusive `until`) and event name."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    t = datetime.fromisoformat(record["time"])
                except (json.JSONDecodeError, KeyError, ValueError, TypeError):
                    raise AuditError(f"{self.path}:{lineno} is not an audit record") from None
                if (since and t < since) or (until and t >= until) or (event and record.get("event") != event):
                    continue
                yield record


def _last_line(f) -> dict | None:
    """The last record of a file open in binary mode, read from the end (the log can be long)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
        return None
    block, data = 4096, b""
    raw = f  # opened in binary mode
    pos = size
    while pos > 0:
        step = min(block, pos)
        pos -= step
        raw.seek(pos)
        data = raw.read(step) + data
        if data.rstrip(b"\n").count(b"\n") >= 1:
            break
    last = data.rstrip(b"\n").split(b"\n")[-1]
    try:
        return json.loads(last)
    except json.JSONDecodeError:
        raise AuditError(f"{f.name}: the last line is not an audit record; run `lmforge audit log --verify`") from None


def _ends_with_newline(f) -> bool:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


def _torn_tail(f) -> tuple[int, int]:
    """(file size, offset just after the last newline that precedes the torn line)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    data = b""
    pos = size
    body_end = size - 1 if size and _ends_with_newline(f) else size  # a torn line may still end in a newline
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        cut = data.rfind(b"\n", 0, body_end - pos)
        if cut >= 0:
            return size, pos + cut + 1
    return size, 0


def _last_line_before(f, end: int) -> dict | None:
    if end == 0:
        return None
    f.seek(max(0, end - 1_000_000))
    lines = f.read(end - max(0, end - 1_000_000)).rstrip(b"\n").split(b"\n")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise AuditError(f"{f.name}: the last two lines are not audit records; run `lmforge audit log --verify`") from None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since` values: an ISO date or time ("2025-01-31", "2025-01-31T12:00") or an age ("90m", "24h", "7d")."""
    now = now or datetime.now(timezone.utc)
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AuditError(f"cannot read the time {text!r}; use an ISO date like 2025-01-31 or an age like 24h or 7d") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
