"""The hash-chained audit log: verifies when untouched, names the line after an edit, deletion, reorder or
truncation, and stores redacted text."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from lmforge.safety.audit_log import AuditError, AuditLog, parse_since


def fill(path, n=5, key=None):
    log = AuditLog(path, key=key)
    for i in range(n):
        log.log_generation(model="tiny-gpt2", prompt=f"prompt {i}", completion=f"completion {i}", key_id=f"k{i % 2}",
                           params={"temperature": 0.7}, prompt_tokens=3, completion_tokens=4)
    return log


def lines(path):
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_untouched_log_verifies(tmp_path):
    log = fill(tmp_path / "audit.jsonl")
    v = log.verify()
    assert v.ok and v.records == 5 and v.head == json.loads(lines(log.path)[-1])["hash"]
    assert [r["seq"] for r in log.read()] == [0, 1, 2, 3, 4]


def test_edited_line_is_detected(tmp_path):
    log = fill(tmp_path / "audit.jsonl")
    ls = lines(log.path)
    ls[2] = ls[2].replace('"completion_tokens":4', '"completion_tokens":40')
    log.path.write_text("".join(ls), encoding="utf-8")
    v = log.verify()
    assert not v.ok and v.line == 3 and "edited" in v.error


def test_removed_and_reordered_lines_are_detected(tmp_path):
    log = fill(tmp_path / "audit.jsonl")
    ls = lines(log.path)
    log.path.write_text("".join(ls[:1] + ls[2:]), encoding="utf-8")
    assert (log.verify().ok, log.verify().line) == (False, 2)
    log.path.write_text("".join([ls[1], ls[0]] + ls[2:]), encoding="utf-8")
    assert (log.verify().ok, log.verify().line) == (False, 1)


def test_recomputed_chain_fails_without_the_key(tmp_path):
    """An attacker who edits a line and recomputes plain SHA-256 hashes cannot forge a keyed log."""
    path = tmp_path / "audit.jsonl"
    fill(path, key=b"server-secret")
    forged = AuditLog(path)  # no key: rewrites the chain with plain SHA-256
    records = [json.loads(l) for l in lines(path)]
    records[1]["completion"] = "something else"
    prev = "0" * 64
    out = []
    for r in records:
        r.pop("hash")
        r["prev"] = prev
        r["hash"] = prev = forged._digest(r)
        out.append(json.dumps(r) + "\n")
    path.write_text("".join(out), encoding="utf-8")
    assert forged.verify().ok  # consistent as a plain chain...
    assert not AuditLog(path, key=b"server-secret").verify().ok  # ...but not under the real key


def test_truncation_needs_the_expected_head(tmp_path):
    log = fill(tmp_path / "audit.jsonl")
    head = log.head()
    log.path.write_text("".join(lines(log.path)[:3]), encoding="utf-8")
    assert log.verify().ok  # a shorter chain is still a chain
    assert not log.verify(expected_head=head).ok


def test_pii_is_never_stored(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.log_generation(model="m", prompt="my card is 4111 1111 1111 1111, mail me at eve@example.com",
                       completion="Sure, I will call +1 415 555 2671", params={"user": "eve@example.com"})
    raw = log.path.read_text(encoding="utf-8")
    for secret in ("4111", "eve@example.com", "555 2671"):
        assert secret not in raw
    assert "[CREDIT_CARD]" in raw and "[EMAIL]" in raw and "[PHONE]" in raw
    assert log.verify().ok


def test_read_since_and_parse_since(tmp_path):
    log = fill(tmp_path / "audit.jsonl", n=3)
    assert len(list(log.read(since=parse_since("1h")))) == 3
    assert list(log.read(since=datetime.now(timezone.utc) + timedelta(minutes=1))) == []
    assert parse_since("2025-01-31") == datetime(2025, 1, 31, tzinfo=timezone.utc)
    with pytest.raises(AuditError, match="ISO date"):
        parse_since("yesterday-ish")
