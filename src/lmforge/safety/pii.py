"""PII detection and redaction: a named-entity model for people, organisations and places, Google's
libphonenumber for phones, regular expressions and checksums for the rest; offline and deterministic.

Covered: PERSON, ORGANIZATION, LOCATION (the NER model lmforge ships, MiniLM fine-tuned on CoNLL-2003, see
ner.py; used when it is installed, which it is with the package, unless LMFORGE_PII_NER=0), PHONE (numbers
libphonenumber accepts as valid for one of `PHONE_REGIONS`, written in that country's national format or
internationally with +, e.g. `020 7946 0958`, `+49 30 12345678`, `(415) 555-2671`), CREDIT_CARD (13-19 digits, a known network prefix and the Luhn check), IBAN (the
country's length and the ISO 13616 mod-97 check), IP_ADDRESS (IPv4 and IPv6, parsed by `ipaddress`), US_SSN
(the SSA's area/group/serial rules), STREET_ADDRESS (US-style "123 Main Street"), SECRET (well-known API-key
formats, private-key blocks, passwords in URLs and `password=`/`api_key:` assignments).

Not covered: phone numbers written as bare digits without a leading + or any separator (indistinguishable
from order numbers) are deliberately skipped; MISC entities of the NER model (nationalities, events) are not
treated as PII.

Why not Presidio's recognizers: `presidio-analyzer` installs spaCy, thinc and tldextract just to import,
and its pattern recognizers are the same idea (a regex, a context window, a checksum); the validators
here follow the same references (Luhn; ISO 13616; SSA's SSN rules), phones go through the same library
Presidio uses (`phonenumbers`), and both are tested on labelled sets with decoys (`pii_synth.py`,
`pii_names_synth.py`).

Redaction replaces each span with `[TYPE]` (or a fixed mask / a keyed digest) and leaves every other byte
of the text as it was.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

PATTERN_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "STREET_ADDRESS", "SECRET")
NER_TYPES = {"PER": "PERSON", "ORG": "ORGANIZATION", "LOC": "LOCATION"}  # the model's type -> ours (MISC dropped)
ENTITY_TYPES = (*PATTERN_TYPES, *NER_TYPES.values())
# Where phone numbers in national format are looked for (ISO 3166 regions); numbers written with +CC are found
# whatever the list. LMFORGE_PII_PHONE_REGIONS=US,GB,... overrides it; detect(phone_regions=...) per call.
DEFAULT_PHONE_REGIONS = ("US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "JP", "BR", "MX", "ZA")


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
    Recognizer("IP_ADDRESS", re.compile(r"(?<![\w.:-])(?<!version )(?<!v)(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)"), ip_ok),
    Recognizer("IP_ADDRESS", re.compile(
        r"(?<![\w:.])(?=[0-9a-fA-F:]*:[0-9a-fA-F:]*:)[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])"),
        lambda s: ip_ok(s) and s.count(":") >= 2 and not re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", s)),
    Recognizer("STREET_ADDRESS", re.compile(
        rf"{_B}\d{{1,6}}(?: [NSEW]\.?| North| South| East| West)?(?: [A-Z][a-z]+| \d+(?:st|nd|rd|th)){{1,3}} "
        rf"{_STREET_SUFFIX}\b(?:,? (?:Apt|Apartment|Suite|Ste|Unit|#)\.? ?[A-Za-z0-9-]+)?"
        r"(?:, [A-Z][a-z]+(?: [A-Z][a-z]+)?, [A-Z]{2} \d{5}(?:-\d{4})?)?")),
]


def configured_phone_regions() -> tuple[str, ...]:
    """The regions national-format phones are looked for in: $LMFORGE_PII_PHONE_REGIONS or the default list."""
    env = os.environ.get("LMFORGE_PII_PHONE_REGIONS")
    if not env:
        return DEFAULT_PHONE_REGIONS
    return tuple(r.strip().upper() for r in env.split(",") if r.strip())


def check_regions(regions: Iterable[str]) -> tuple[str, ...]:
    import phonenumbers

    regions = tuple(r.upper() for r in regions)
    bad = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
    if bad:
        raise ValueError(f"unknown phone regions: {', '.join(bad)}; use ISO 3166 codes such as US, GB, DE")
    return regions


# 3-2-4 digits is the SSN layout (a valid Spanish number read that way is no phone anyone writes); a number
# right after "version", "ISBN", "order #", ... is that, not a phone (Presidio's recognizers use such context).
_NOT_A_PHONE = re.compile(r"\d{3}-\d{2}-\d{4}")
_NOT_A_PHONE_BEFORE = re.compile(r"(?i)(?:\bv|\bversion|\bisbn|\border|\bticket|\bcase|\bref|#)[ .:]*$")


def _phones(text: str, regions: tuple[str, ...]) -> list[Entity]:
    """Valid numbers (libphonenumber's VALID leniency: a real number plan, the right length) for any region,
    written with a leading + or with separators, 7 to 15 digits (E.164's most); bare digit runs are left alone
    (order numbers look the same)."""
    import phonenumbers

    if sum(ch.isdigit() for ch in text) < 7:  # no number we accept is shorter; skips most texts quickly
        return []
    spans: dict[tuple[int, int], str] = {}
    for region in regions:
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            raw = m.raw_string
            if raw.isdigit() or not 7 <= sum(ch.isdigit() for ch in raw) <= 15 or _NOT_A_PHONE.fullmatch(raw) \
                    or _NOT_A_PHONE_BEFORE.search(text, max(0, m.start - 12), m.start):
                continue
            spans[m.start, m.end] = raw
    return [Entity("PHONE", a, b, raw) for (a, b), raw in spans.items()]


def default_types() -> tuple[str, ...]:
    """What `detect` looks for when not told: every type, the NER ones only when the model is available."""
    from . import ner

    return ENTITY_TYPES if ner.enabled() else PATTERN_TYPES


def detect(text: str, types: Iterable[str] | None = None, *, phone_regions: Iterable[str] | None = None) -> list[Entity]:
    """All PII spans in `text`, sorted, without overlaps (the higher priority wins, then the longer span)."""
    return detect_many([text], types, phone_regions=phone_regions)[0]


def detect_many(texts: list[str], types: Iterable[str] | None = None, *,
                phone_regions: Iterable[str] | None = None) -> list[list[Entity]]:
    """`detect` for many texts at once: the NER model runs over them in batches."""
    wanted = set(types) if types is not None else set(default_types())
    unknown = wanted - set(ENTITY_TYPES)
    if unknown:
        raise ValueError(f"unknown PII types: {', '.join(sorted(unknown))}; known: {', '.join(ENTITY_TYPES)}")
    names = wanted & set(NER_TYPES.values())
    tagged: list[list[Entity]] = [[] for _ in texts]
    if names:
        from . import ner

        if not ner.enabled():
            raise ValueError(f"{', '.join(sorted(names))} need the NER model, which is not available here "
                             f"({'turned off by ' + ner.ENV_SWITCH if ner.shipped() else 'not installed'})")
        todo = [i for i, t in enumerate(texts) if any(ch.isalpha() for ch in t)]
        found = ner.load_tagger().tag([texts[i] for i in todo]) if todo else []
        for i, ents in zip(todo, found):
            tagged[i] = [Entity(NER_TYPES[e["type"]], e["start"], e["end"], e["text"]) for e in ents
                         if NER_TYPES.get(e["type"]) in names]
    regions = check_regions(phone_regions if phone_regions is not None else configured_phone_regions())
    return [_select(text, wanted, regions, tagged[i]) for i, text in enumerate(texts)]


def _select(text: str, wanted: set[str], regions: tuple[str, ...], named: list[Entity]) -> list[Entity]:
    found: list[tuple[Entity, int]] = []
    for rec in RECOGNIZERS:
        if rec.type not in wanted:
            continue
        for m in rec.pattern.finditer(text):
            start, end = m.span(rec.group)
            value = text[start:end]
            if start < end and rec.validate(value) and rec.validate_match(m):
                found.append((Entity(rec.type, start, end, value), rec.priority))
    if "PHONE" in wanted:
        found += [(e, 0) for e in _phones(text, regions)]
    # The model's spans lose every overlap with a pattern's: an email's user name, a street in an address.
    found += [(e, -1) for e in named]
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


def redact(text: str, types: Iterable[str] | None = None, *, style: str = "type", key: bytes | None = None,
           phone_regions: Iterable[str] | None = None) -> Redaction:
    """Replace every PII span; the bytes outside the spans are unchanged.

    style "type" writes `[EMAIL]`, "mask" writes `*` for every character, "hash" writes `[EMAIL:1a2b3c4d]`,
    a keyed digest (HMAC-SHA256 with `key`) so equal values stay linkable without being readable."""
    return redact_many([text], types, style=style, key=key, phone_regions=phone_regions)[0]


def redact_many(texts: list[str], types: Iterable[str] | None = None, *, style: str = "type",
                key: bytes | None = None, phone_regions: Iterable[str] | None = None) -> list[Redaction]:
    """`redact` for many texts at once (the NER model runs over them in batches)."""
    if style not in ("type", "mask", "hash"):
        raise ValueError("style must be type, mask or hash")
    if style == "hash" and not key:
        raise ValueError("style 'hash' needs a secret key")
    out = []
    for text, entities in zip(texts, detect_many(texts, types, phone_regions=phone_regions)):
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
        out.append(Redaction("".join(parts), entities))
    return out


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


def scrub_lines(lines: Iterable[str], report: ScrubReport, types: Iterable[str] | None = None, *,
                phone_regions: Iterable[str] | None = None, batch: int = 64) -> Iterable[str]:
    """Redact line by line (line endings are kept), counting into `report`; lines go to the detector in
    batches of `batch` (the NER model's batch)."""
    types = list(types) if types is not None else None
    chunk: list[str] = []

    def flush():
        for r in redact_many(chunk, types, phone_regions=phone_regions):
            report.lines += 1
            if r.entities:
                report.lines_changed += 1
                report.counts.update(r.counts)
            yield r.text
        chunk.clear()

    for line in lines:
        chunk.append(line)
        if len(chunk) >= batch:
            yield from flush()
    if chunk:
        yield from flush()


def scrub_file(src, dst, types: Iterable[str] | None = None, report: ScrubReport | None = None,
               progress: Callable[[int], None] | None = None, *,
               phone_regions: Iterable[str] | None = None) -> ScrubReport:
    """Redact a UTF-8 text file into `dst` (line endings preserved); `progress(n_bytes)` after each batch."""
    report = report or ScrubReport()
    with open(src, encoding="utf-8", newline="") as fin, open(dst, "w", encoding="utf-8", newline="") as fout:
        for out in scrub_lines(_counted(fin, progress), report, types, phone_regions=phone_regions):
            fout.write(out)
    report.files += 1
    return report


def _counted(lines, progress):
    for line in lines:
        yield line
        if progress:
            progress(len(line.encode("utf-8")))


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
