"""A labelled PII test set that lmforge generates itself, with realistic decoys, and its scorer.

Every sentence is built from a template by appending pieces, so each PII span's offsets are known exactly.
Values are random but valid (cards pass Luhn, IBANs mod-97, SSNs the SSA rules); decoys look like PII and
are not: order numbers, dates, times, version strings, prices, ISBNs, ZIP codes, tracking numbers that fail
Luhn, IBAN-shaped strings with a wrong check, SSN-shaped numbers with a forbidden area, short numbers.
"""
from __future__ import annotations

import random
import string
from collections import Counter

from .pii import IBAN_LENGTHS, PATTERN_TYPES, detect, luhn_ok

_FIRST = ["alice", "bob", "carol", "dmitri", "eve", "fatima", "gustavo", "hiro", "ines", "jamal", "kofi", "lena"]
_DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "uni-example.edu", "example.io"]
_STREETS = ["Main", "Oak", "Maple", "Cedar", "Elm", "Pine", "Washington", "Lake View", "Sunset", "Mill Creek"]
_SUFFIXES = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Drive", "Court", "Way"]
_CITIES = [("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("San Jose", "CA"), ("Albany", "NY")]


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def luhn_complete(r: random.Random, prefix: str, length: int) -> str:
    body = prefix + _digits(r, length - len(prefix) - 1)
    for check in string.digits:
        if luhn_ok(body + check):
            return body + check
    raise AssertionError


def make_card(r: random.Random, valid: bool = True) -> str:
    prefix, length = r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                               ("6011", 16), ("3530", 16)])
    n = luhn_complete(r, prefix, length)
    if not valid:
        n = n[:-1] + str((int(n[-1]) + r.randint(1, 9)) % 10)
    sep = r.choice(["", " ", "-"])
    if length == 15:
        return sep.join([n[:4], n[4:10], n[10:]])
    return sep.join(n[i:i + 4] for i in range(0, 16, 4))


def make_iban(r: random.Random, valid: bool = True) -> str:
    cc = r.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "BE", "AT", "PL"])
    n = IBAN_LENGTHS[cc]
    if cc in ("GB", "NL"):
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, n - 8)
    else:
        bban = _digits(r, n - 4)
    rearranged = "".join(str(int(ch, 36)) for ch in bban + cc + "00")
    check = 98 - int(rearranged) % 97
    if not valid:
        check = (check + r.randint(1, 90)) % 97 + 2 if check + 1 != 97 else 5
    s = f"{cc}{check:02d}{bban}"
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4)) if r.random() < 0.5 else s


def make_ssn(r: random.Random, valid: bool = True) -> str:
    area = r.choice([f"{r.randint(1, 665):03d}", f"{r.randint(667, 899):03d}"]) if valid else r.choice(["000", "666", f"9{_digits(r, 2)}"])
    return f"{area}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


# Assigned North American area codes: numbers in unassigned ones (922, 291, ...) are rightly not phones to
# libphonenumber, which pii.py uses.
_AREA_CODES = ["212", "213", "305", "312", "415", "512", "617", "646", "202", "206", "303", "404", "503", "702"]


def make_phone(r: random.Random) -> str:
    a, b, c = r.choice(_AREA_CODES), f"{r.randint(2, 9)}{_digits(r, 2)}", _digits(r, 4)
    return r.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"1-{a}-{b}-{c}",
                     f"+44 20 {r.choice('378')}{_digits(r, 3)} {_digits(r, 4)}", f"+49 30 {_digits(r, 8)}",
                     f"+33 {r.choice('1236')} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)}",
                     f"+1-{a}-{b}-{c}", f"+91 {r.randint(6, 9)}{_digits(r, 4)} {_digits(r, 5)}"])


def make_ip(r: random.Random) -> str:
    if r.random() < 0.75:
        return ".".join(str(r.randint(1 if i == 0 else 0, 255)) for i in range(4))
    groups = [f"{r.randint(0, 65535):x}" for _ in range(8)]
    return r.choice([":".join(groups), f"2001:db8::{groups[0]}", f"fe80::{groups[1]}:{groups[2]}"])


def make_email(r: random.Random) -> str:
    user = r.choice(_FIRST) + r.choice(["", ".", "_", "+news."]) + r.choice(_FIRST + [str(r.randint(1, 99))])
    return f"{user}@{r.choice(_DOMAINS)}"


def make_address(r: random.Random) -> str:
    s = f"{r.randint(1, 9999)} {r.choice(['', 'N ', 'W. ', 'South '])}{r.choice(_STREETS)} {r.choice(_SUFFIXES)}"
    if r.random() < 0.3:
        s += f", Apt {r.randint(1, 40)}{r.choice(['', 'B'])}"
    if r.random() < 0.4:
        city, state = r.choice(_CITIES)
        s += f", {city}, {state} {_digits(r, 5)}"
    return s


def make_secret(r: random.Random) -> tuple[str, str, str]:
    """(text before, secret, text after): the secret alone is the entity."""
    alnum = string.ascii_letters + string.digits
    rnd = lambda n: "".join(r.choice(alnum) for _ in range(n))  # noqa: E731
    kind = r.randrange(7)
    if kind == 0:
        return "", "AKIA" + "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(16)), ""
    if kind == 1:
        return "", "ghp_" + rnd(36), ""
    if kind == 2:
        return "", "sk-proj-" + rnd(40), ""
    if kind == 3:
        return f"postgres://{r.choice(_FIRST)}:", rnd(12), "@db.example.com:5432/app"
    if kind == 4:
        return "password=", rnd(10) + "!", ""
    if kind == 5:
        return "api_key: ", rnd(32), ""
    return "", "xoxb-" + _digits(r, 11) + "-" + rnd(24), ""


def make_decoy(r: random.Random) -> str:
    kind = r.randrange(14)
    return [
        lambda: f"order #{_digits(r, 8)}",
        lambda: f"order number {r.randint(10**9, 10**10 - 1)}",
        lambda: f"{r.randint(2000, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
        lambda: f"{r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(1990, 2030)}",
        lambda: f"v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
        lambda: f"version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 999)}",
        lambda: f"${r.randint(1, 99)},{_digits(r, 3)}.{_digits(r, 2)}",
        lambda: f"ISBN 978-{r.randint(0, 9)}-{_digits(r, 2)}-{_digits(r, 6)}-{r.randint(0, 9)}",
        lambda: f"tracking {make_card(r, valid=False)}",
        lambda: f"reference {make_iban(r, valid=False).replace(' ', '')}",
        lambda: f"case {make_ssn(r, valid=False)}",
        lambda: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
        lambda: f"ZIP {_digits(r, 5)}, {r.randint(2, 500)} items at {r.randint(1, 99)}.{_digits(r, 2)} kg",
        lambda: f"ticket {r.randint(100, 999)}-{r.randint(100, 999)}",
    ][kind]()


_TEMPLATES = {
    "EMAIL": ["Please write to {} before Friday.", "Contact: {}", "cc {} on the thread"],
    "PHONE": ["Call me at {} after 5pm.", "Phone: {}", "reach the desk on {}."],
    "CREDIT_CARD": ["Card number {} expires 04/27.", "charged to {}", "Pay with {}."],
    "IBAN": ["Transfer to IBAN {} please.", "IBAN: {}", "account {} (savings)"],
    "IP_ADDRESS": ["Login from {} was blocked.", "server at {} is down", "IP {}"],
    "US_SSN": ["SSN {} on file.", "my social is {}", "Social Security number: {}."],
    "STREET_ADDRESS": ["Ship it to {}.", "We moved to {} last year", "Address: {}"],
    "SECRET": ["config has {} in it", "token {}", "Use {} to connect."],
}


def synthetic_pii_set(n: int = 2000, seed: int = 0) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """`n` (text, [(type, start, end)]) examples; about a third carry a decoy, some two entities, some none."""
    r = random.Random(seed)
    makers = {"EMAIL": make_email, "PHONE": make_phone, "CREDIT_CARD": make_card, "IBAN": make_iban,
              "IP_ADDRESS": make_ip, "US_SSN": make_ssn, "STREET_ADDRESS": make_address}
    out = []
    for i in range(n):
        text, spans = "", []
        for _ in range(r.choice([0, 1, 1, 1, 2])):
            if text:
                text += " Also, "
            t = r.choice(PATTERN_TYPES)
            before, after = r.choice(_TEMPLATES[t]).split("{}")
            if t == "SECRET":
                pre, value, post = make_secret(r)
                before, after = before + pre, post + after
            else:
                value = makers[t](r)
            text += before
            spans.append((t, len(text), len(text) + len(value)))
            text += value + after
        if r.random() < 0.5 or not spans:
            text += f" (see {make_decoy(r)} and {make_decoy(r)})"
        out.append((text, spans))
    return out


def evaluate(examples, types=PATTERN_TYPES) -> dict[str, dict[str, float]]:
    """Per-type precision/recall/F1 with exact span matching (the pattern types: this set has no names)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for text, gold in examples:
        pred = {(e.type, e.start, e.end) for e in detect(text, types)}
        gold = set(gold)
        for t, *_ in pred & gold:
            tp[t] += 1
        for t, *_ in pred - gold:
            fp[t] += 1
        for t, *_ in gold - pred:
            fn[t] += 1
    out = {}
    for t in types:
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else 1.0
        rec = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else 1.0
        out[t] = {"support": tp[t] + fn[t], "precision": p, "recall": rec,
                  "f1": 2 * p * rec / (p + rec) if p + rec else 0.0}
    return out
