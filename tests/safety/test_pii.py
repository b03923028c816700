"""PII: hand-made cases (valid vs invalid checksums, decoys), byte-exact redaction, the generated labelled
set, and the scrub report."""
import pytest

from lmforge.safety.pii import (PATTERN_TYPES, card_ok, detect, iban_ok, luhn_ok, redact, scrub_file,
                                ssn_ok)
from lmforge.safety.pii_synth import evaluate, synthetic_pii_set


def found(text):
    """The pattern detectors alone (names, organisations and places are tested with the model)."""
    return [(e.type, e.text) for e in detect(text, PATTERN_TYPES)]


def test_luhn_and_card_validators():
    assert luhn_ok("79927398713")  # the textbook Luhn example
    assert not luhn_ok("79927398710")
    assert card_ok("4111111111111111") and card_ok("378282246310005") and card_ok("5555555555554444")
    assert not card_ok("4111111111111112")  # Luhn fails
    assert not card_ok("1234567812345670")  # Luhn passes, no card network starts with 1


def test_iban_validator():
    assert iban_ok("DE89 3704 0044 0532 0130 00") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89 3704 0044 0532 0130 01")  # checksum
    assert not iban_ok("DE89 3704 0044 0532 0130")  # length for DE is 22
    assert not iban_ok("XX82WEST12345698765432")  # no such country


def test_ssn_validator():
    assert ssn_ok("123-45-6780")
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000", "078-05-1120"):
        assert not ssn_ok(bad), bad


@pytest.mark.parametrize("text,expected", [
    ("Mail jane.doe+news@example.co.uk today", [("EMAIL", "jane.doe+news@example.co.uk")]),
    ("Pay with 4111 1111 1111 1111 now", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("Amex 3782-822463-10005.", [("CREDIT_CARD", "3782-822463-10005")]),
    ("IBAN DE89370400440532013000 ok", [("IBAN", "DE89370400440532013000")]),
    ("SSN 123-45-6780.", [("US_SSN", "123-45-6780")]),
    ("Call (415) 555-2671 or +44 20 7946 0958.", [("PHONE", "(415) 555-2671"), ("PHONE", "+44 20 7946 0958")]),
    ("from 192.168.1.20 and 2001:db8::ff00:42:8329", [("IP_ADDRESS", "192.168.1.20"), ("IP_ADDRESS", "2001:db8::ff00:42:8329")]),
    ("Ship to 221 Baker Street, Springfield, IL 62704 please",
     [("STREET_ADDRESS", "221 Baker Street, Springfield, IL 62704")]),
    ("key AKIAIOSFODNN7EXAMPLE in env", [("SECRET", "AKIAIOSFODNN7EXAMPLE")]),
    ("db https://admin:hunter2pass@db.example.com/x", [("SECRET", "hunter2pass")]),
    ("set password=Tr0ub4dor&3 then", [("SECRET", "Tr0ub4dor&3")]),
])
def test_hand_made_positives(text, expected):
    assert found(text) == expected


@pytest.mark.parametrize("text", [
    "Order #4111111111111112 shipped on 2024-03-15 at 12:30:45.",  # Luhn fails
    "Tracking 1234 5678 9012 3456",  # no network, Luhn fails
    "Upgrade to version 1.2.3.4 or v2.10.3 before 15/03/2024.",
    "Total $1,234.56 for 3 items, ZIP 90210, ISBN 978-3-16-148410-0.",
    "Reference DE89370400440532013001 was rejected.",  # IBAN checksum fails
    "Case 000-12-3456 and 666-45-6789 are not SSNs.",
    "The ratio was 3.14159 and the score 256.300.1.1 overflowed.",
    "Meeting in room 555-1234 at 10:30, order number 4839201857.",
    "Chapter 12 Street Fighter was released in 1987.",
    "It costs 12.50 and weighs 3.2 kg; call extension 4412.",
    "We must talk in secret: believe me, come back again.",
    "The password: remember it well, said the knight.",
])
def test_no_false_positives_on_ordinary_numbers(text):
    assert found(text) == []


def test_redaction_keeps_every_other_byte():
    text = "Hi\tBob,\r\n  write to bob@example.com or call +1 415 555 2671 — thanks! 🙂\n"
    r = redact(text, PATTERN_TYPES)
    assert r.text == "Hi\tBob,\r\n  write to [EMAIL] or call [PHONE] — thanks! 🙂\n"
    assert r.counts == {"EMAIL": 1, "PHONE": 1}
    masked = redact(text, PATTERN_TYPES, style="mask").text
    assert len(masked) == len(text) and masked.replace("*", "") == text.replace("bob@example.com", "").replace("+1 415 555 2671", "")
    hashed = redact("a@example.com b@example.com a@example.com", style="hash", key=b"k").text
    first, second, third = hashed.split()
    assert first == third != second and first.startswith("[EMAIL:")


def test_generated_labelled_set_precision_recall_per_type():
    scores = evaluate(synthetic_pii_set(1500, seed=123))
    for t in PATTERN_TYPES:
        assert scores[t]["support"] > 100, t
        assert scores[t]["precision"] >= 0.95 and scores[t]["recall"] >= 0.95, (t, scores[t])


def test_generated_set_offsets_are_exact():
    for text, spans in synthetic_pii_set(200, seed=5):
        for t, s, e in spans:
            assert text[s:e].strip() == text[s:e] and text[s:e]


def test_scrub_file_report_counts(tmp_path):
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes("a@example.com and b@example.org\r\nnothing here\r\ncard 4111111111111111\r\nlast".encode())
    report = scrub_file(src, dst, PATTERN_TYPES)
    assert report.to_dict() == {"files": 1, "lines": 4, "lines_changed": 2,
                                "entities": {"CREDIT_CARD": 1, "EMAIL": 2}, "total": 3}
    assert dst.read_bytes() == b"[EMAIL] and [EMAIL]\r\nnothing here\r\ncard [CREDIT_CARD]\r\nlast"


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown PII types"):
        detect("x", types=["NAME"])


def test_logging_filter_redacts_records():
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    log = logging.getLogger("lmforge.test.pii")
    handler = Keep()
    handler.addFilter(__import__("lmforge.safety.pii", fromlist=["RedactingFilter"]).RedactingFilter())
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("request from %s with card %s", "eve@example.com", "4111 1111 1111 1111")
    finally:
        log.removeHandler(handler)
    assert records == ["request from [EMAIL] with card [CREDIT_CARD]"]
