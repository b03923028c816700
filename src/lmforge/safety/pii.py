"""PII detection and redaction with regular expressions and checksums, offline and deterministic.

Covered: EMAIL, PHONE (North American numbers with separators or parentheses, and international numbers
written with a leading +), CREDIT_CARD (13-19 digits, a known network prefix and the Luhn check), IBAN (the
country's length and the ISO 13616 mod-97 check), IP_ADDRESS (IPv4 and IPv6, parsed by `ipaddress`), US_SSN
(the SSA's area/group/serial rules), STREET_ADDRESS (US-style "123 Main Street"), SECRET (well-known API-key
formats, private-key blocks, passwords in URLs and `password=`/`api_key:` assignments).

Not covered: personal names, organisations and locations other than street addresses need an NER model,
and none can be had offline here (Presidio's default spaCy model and `detoxify` download at run time);
phone numbers written as ten bare digits (indistinguishable from order numbers) are deliberately skipped.

Why not Presidio's recognizers: `presidio-analyzer` installs spaCy, thinc and tldextract just to import,
and its pattern recognizers are the same idea (a regex, a context window, a checksum); the validators
here follow the same references (Luhn; ISO 13616; SSA's SSN rules) and are tested on a labelled set with
decoys (`pii_synth.py`).

Redaction replaces each span with `[TYPE]` (or a fixed mask / a keyed digest) and leaves every other byte
of the text as it was.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

ENTITY_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "STREET_ADDRESS", "SECRET")


@dataclass(frozen=True)
class Entity:
    type: str
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return {"type": self.type, "start": self.start, "end": self.end}


# ---------------------------------------------------------------- validators


def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check (ISO/IEC 7812-1 annex B) over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes (IIN ranges) and lengths of the card networks people actually type.
_CARD_PREFIX = re.compile(r"^(4\d{12}(\d{3})?(\d{3})?|5[1-5]\d{14}|2(22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"
                          r"|3[47]\d{13}|6011\d{12}|65\d{14}|64[4-9]\d{13}|35(2[89]|[3-8]\d)\d{12}"
                          r"|3(0[0-5]|[68]\d)\d{11})$")


def card_ok(digits: str) -> bool:
    return bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits)


# ISO 13616 IBAN lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(iban: str) -> bool:
    """Country length and the mod-97 check: move the first four characters to the end, letters to 10..35."""
    s = re.sub(r"[ -]", "", iban).upper()
    if len(s) != IBAN_LENGTHS.get(s[:2], -1) or not s[2:4].isdigit():
        return False
    return int("".join(str(int(ch, 36)) for ch in s[4:] + s[:4])) % 97 == 1


def ssn_ok(ssn: str) -> bool:
    """SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000; not the famous advertising number."""
    d = re.sub(r"\D", "", ssn)
    area, group, serial = d[:3], d[3:5], d[5:]
    return (area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
            and d not in ("078051120", "123456789"))


def ip_ok(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def nanp_ok(digits: str) -> bool:
    """North American numbering plan: area code and exchange start with 2-9 (digits without the leading 1)."""
    return len(digits) == 10 and digits[0] in "23456789" and digits[3] in "23456789"


# ---------------------------------------------------------------- recognizers


@dataclass
class Recognizer:
    type: str
    pattern: re.Pattern
    validate: Callable[[str], bool] = lambda s: True
    group: int | str = 0  # the regex group that is the entity (e.g. only the password of a URL)
    priority: int = 0  # wins overlaps against lower priority at equal length
    validate_match: Callable[[re.Match], bool] = lambda m: True  # a check that needs the surrounding groups


_B = r"(?<![\w@.+-])"  # left boundary: not inside a word, number, email or version string
_E = r"(?![\w@]|[.-]\d)"  # right boundary

_STREET_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace"
                  r"|Ter|Parkway|Pkwy|Circle|Cir|Highway|Hwy|Square|Sq|Trail|Trl)")

_SECRET_FORMATS = "|".join([
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{36,255}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,255}",
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",  # OpenAI / Anthropic style keys
    r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"AIza[0-9A-Za-z_-]{35}",  # Google API key
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face token
    r"glpat-[A-Za-z0-9_-]{20}",  # GitLab
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
])

RECOGNIZERS: list[Recognizer] = [
    Recognizer("SECRET", re.compile(
        r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )?PRIVATE KEY-----"), priority=3),
    # the password of scheme://user:password@host
    Recognizer("SECRET", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<pw>[^\s@/]+)@[^\s]+", re.I), group="pw",
               priority=3),
    Recognizer("SECRET", re.compile(
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"(?P<sep>\s*[:=]\s*)[\"']?(?P<v>[^\s\"',;]{6,})"), group="v", priority=2,
        # after "secret: " prose goes on with a word ("talk in secret: believe me"); a value after a colon
        # must hold a digit or a symbol
        validate_match=lambda m: "=" in m.group("sep") or not m.group("v").isalpha()),
    Recognizer("SECRET", re.compile(rf"(?<![\w-])(?:{_SECRET_FORMATS})(?![\w-])"), priority=2),
    Recognizer("EMAIL", re.compile(
        r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"),
        priority=1),
    Recognizer("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), iban_ok),
    Recognizer("CREDIT_CARD", re.compile(rf"{_B}(?:\d{{4}}[ -]?){{2}}\d{{4}}[ -]?\d{{1,7}}{_E}"
                                         rf"|{_B}\d{{4}}[ -]?\d{{6}}[ -]?\d{{4,5}}{_E}"),
               lambda s: card_ok(re.sub(r"\D", "", s))),
    Recognizer("US_SSN", re.compile(rf"{_B}\d{{3}}([- ])\d{{2}}\1\d{{4}}{_E}"), ssn_ok),
    # +CC then 6-14 more digits in groups; or NANP numbers with separators / parentheses.
    Recognizer("PHONE", re.compile(r"(?<![\w+])\+(?:\d[ .-]?){7,14}\d(?!\w|[.-]\d)|(?<![\w+])\+\d{1,3}[ .-]?\(\d{1,4}\)[ .-]?\d{2,4}[ .-]?\d{2,4}(?:[ .-]?\d{2,4})?(?![\w])"),
               lambda s: 8 <= len(re.sub(r"\D", "", s)) <= 15),
    Recognizer("PHONE", re.compile(
        rf"(?:(?<![\w+.-])1[ .-]|{_B})(?:\(\d{{3}}\)[ ]?|\d{{3}}[.-])\d{{3}}[.-]\d{{4}}{_E}"),
        lambda s: nanp_ok(re.sub(r"\D", "", s)[-10:])),
    Recognizer("IP_ADDRESS", re.compile(r"(?<![\w.:-])(?<!version )(?<!v)(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)"), ip_ok),
    Recognizer("IP_ADDRESS", re.compile(
        r"(?<![\w:.])(?=[0-9a-fA-F:]*:[0-9a-fA-F:]*:)[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])"),
        lambda s: ip_ok(s) and s.count(":") >= 2 and not re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", s)),
    Recognizer("STREET_ADDRESS", re.compile(
        rf"{_B}\d{{1,6}}(?: [NSEW]\.?| North| South| East| West)?(?: [A-Z][a-z]+| \d+(?:st|nd|rd|th)){{1,3}} "
        rf"{_STREET_SUFFIX}\b(?:,? (?:Apt|Apartment|Suite|Ste|Unit|#)\.? ?[A-Za-z0-9-]+)?"
        r"(?:, [A-Z][a-z]+(?: [A-Z][a-z]+)?, [A-Z]{2} \d{5}(?:-\d{4})?)?")),
]


def detect(text: str, types: Iterable[str] | None = None) -> list[Entity]:
    """All PII spans in `text`, sorted, without overlaps (the higher priority wins, then the longer span)."""
    wanted = set(types) if types is not None else set(ENTITY_TYPES)
    unknown = wanted - set(ENTITY_TYPES)
    if unknown:
        raise ValueError(f"unknown PII types: {', '.join(sorted(unknown))}; known: {', '.join(ENTITY_TYPES)}")
    found: list[tuple[Entity, int]] = []
    for rec in RECOGNIZERS:
        if rec.type not in wanted:
            continue
        for m in rec.pattern.finditer(text):
            start, end = m.span(rec.group)
            value = text[start:end]
            if start < end and rec.validate(value) and rec.validate_match(m):
                found.append((Entity(rec.type, start, end, value), rec.priority))
    # Greedy selection: priority first (a URL's password beats the email-shaped "password@host"), then the
    # longer span; keep spans that overlap nothing kept.
    found.sort(key=lambda ep: (-ep[1], -(ep[0].end - ep[0].start), ep[0].start))
    kept: list[Entity] = []
    for e, _ in found:
        if all(e.end <= k.start or e.start >= k.end for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda e: e.start)


@dataclass
class Redaction:
    text: str
    entities: list[Entity]

    @property
    def counts(self) -> Counter:
        return Counter(e.type for e in self.entities)


def redact(text: str, types: Iterable[str] | None = None, *, style: str = "type", key: bytes | None = None) -> Redaction:
    """Replace every PII span; the bytes outside the spans are unchanged.

    style "type" writes `[EMAIL]`, "mask" writes `*` for every character, "hash" writes `[EMAIL:1a2b3c4d]`,
    a keyed digest (HMAC-SHA256 with `key`) so equal values stay linkable without being readable."""
    if style not in ("type", "mask", "hash"):
        raise ValueError("style must be type, mask or hash")
    if style == "hash" and not key:
        raise ValueError("style 'hash' needs a secret key")
    entities = detect(text, types)
    parts, pos = [], 0
    for e in entities:
        parts.append(text[pos:e.start])
        if style == "type":
            parts.append(f"[{e.type}]")
        elif style == "mask":
            parts.append("*" * (e.end - e.start))
        else:
            digest = hmac.new(key, e.text.encode(), hashlib.sha256).hexdigest()[:8]
            parts.append(f"[{e.type}:{digest}]")
        pos = e.end
    parts.append(text[pos:])
    return Redaction("".join(parts), entities)


def redact_text(text: str) -> str:
    """`redact(text).text`: the one-call hook for stores and logs (redaction on by default)."""
    return redact(text).text


# ---------------------------------------------------------------- corpora


@dataclass
class ScrubReport:
    """What `scrub` found: entity counts per type, lines and files touched."""

    files: int = 0
    lines: int = 0
    lines_changed: int = 0
    counts: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"files": self.files, "lines": self.lines, "lines_changed": self.lines_changed,
                "entities": dict(sorted(self.counts.items())), "total": sum(self.counts.values())}


def scrub_lines(lines: Iterable[str], report: ScrubReport, types: Iterable[str] | None = None) -> Iterable[str]:
    """Redact line by line (line endings are kept), counting into `report`."""
    types = list(types) if types is not None else None
    for line in lines:
        r = redact(line, types)
        report.lines += 1
        if r.entities:
            report.lines_changed += 1
            report.counts.update(r.counts)
        yield r.text


def scrub_file(src, dst, types: Iterable[str] | None = None, report: ScrubReport | None = None,
               progress: Callable[[int], None] | None = None) -> ScrubReport:
    """Redact a UTF-8 text file into `dst` (line endings preserved); `progress(n_bytes)` after each line."""
    report = report or ScrubReport()
    with open(src, encoding="utf-8", newline="") as fin, open(dst, "w", encoding="utf-8", newline="") as fout:
        for line in fin:
            fout.write(next(iter(scrub_lines([line], report, types))))
            if progress:
                progress(len(line.encode("utf-8")))
    report.files += 1
    return report


class RedactingFilter(logging.Filter):
    """A logging filter that redacts PII from every record it passes (message and arguments formatted first):
    `handler.addFilter(RedactingFilter())` keeps server logs free of what the detector finds."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        record.msg, record.args = redact_text(message), None
        return True
