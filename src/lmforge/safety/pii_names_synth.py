"""A labelled set for the PII types a pattern cannot find: people, organisations and places in running text,
and phone numbers in the national and international formats of 13 countries, with decoys.

Written before the detector was run on it and not changed after (see docs/results.md): templates in the
style of support chats, e-mails and notes; names, organisations and places from lists drawn from many
countries; decoys that look like entities and are not (product names, capitalised common words and names
that are also words, titles and headings, dates, weekdays and months, order numbers, versions, prices,
times). A person's span is the name without its title ("Dr. Okafor" -> "Okafor"), as CoNLL annotates.
"""
from __future__ import annotations

import random
import string
from collections import Counter

FIRST = ["Maria", "James", "Aisha", "Wei", "Olga", "Carlos", "Priya", "Kenji", "Fatima", "Liam", "Chiara", "Mehmet",
         "Sofia", "Kwame", "Ingrid", "Diego", "Yuki", "Amara", "Pierre", "Anna", "Rahul", "Elena", "Tomasz", "Grace",
         "Mark", "Rose", "Jack", "Hope", "Bill", "Frank", "Nadia", "Oluwaseun", "Hannah", "Mateo", "Siobhan", "Arjun",
         "Leila", "Jonas", "Mei", "Sipho", "Emily", "Daniel", "Zainab", "Lars", "Camille", "Hiroshi", "Lucia", "Omar",
         "Ava", "Noah", "Ines", "Dmitri", "Thandiwe", "Rafael", "Aylin", "Kai", "Beatriz", "Samuel", "Freya", "Tariq"]
LAST = ["Garcia", "Smith", "Okafor", "Chen", "Ivanova", "Mendes", "Sharma", "Tanaka", "Haddad", "Murphy", "Rossi",
        "Yilmaz", "Novak", "Mensah", "Larsen", "Fernandez", "Sato", "Nwosu", "Dubois", "Kowalski", "Patel", "Popescu",
        "Nowak", "Baker", "Wright", "Hill", "Stone", "Young", "King", "Schmidt", "Jensen", "O'Brien", "Kim",
        "Nguyen", "Silva", "Hoffmann", "Andersson", "Moreau", "Kaur", "Dlamini", "Walsh", "Bianchi", "Suzuki",
        "Abdullah", "Müller", "Costa", "Petrov", "van Dijk", "Khan", "Lopez"]
ORGS = ["Microsoft", "Siemens", "the United Nations", "Toyota", "Barclays", "Deutsche Bank", "Oxfam", "Unilever",
        "the World Health Organization", "Red Cross", "Nestlé", "Samsung", "Accenture", "Airbus", "Vodafone",
        "Northwind Traders", "Brightwater Analytics", "Greenfield Capital", "Bluepeak Logistics", "Harbor Health",
        "Contoso Ltd", "Fabrikam Inc", "Meridian Insurance", "Silverline Bank", "Crescent Foods",
        "Stanford University", "the University of Lagos", "Amnesty International", "Goldman Sachs", "Renault",
        "IKEA", "Tata Consultancy Services", "Petrobras", "the BBC", "Reliance Industries", "Novartis",
        "Lakeside Dental Clinic", "Orion Software", "Kestrel Engineering", "Summit Legal LLP"]
PLACES = ["London", "Nairobi", "São Paulo", "Osaka", "Berlin", "Toronto", "Lagos", "Mumbai", "Lyon", "Seville",
          "Texas", "Bavaria", "Kenya", "Peru", "Melbourne", "Cairo", "Oslo", "Manila", "Chicago", "Warsaw",
          "Istanbul", "Hanoi", "Cape Town", "Dublin", "Quito", "Lisbon", "Bangalore", "Vancouver", "Kraków",
          "Ghana", "Portugal", "Scotland", "New Zealand", "Mexico City", "Marseille", "Rotterdam", "Zurich",
          "Buenos Aires", "Seoul", "Brisbane"]
TITLES = ["Dr.", "Mr.", "Ms.", "Mrs.", "Prof."]

# {P} a full name, {F} a first name, {T} a title and surname, {O} an organisation, {L} a place.
TEMPLATES = [
    "Hi, my name is {P} and I'm calling about my order.",
    "Please forward this to {P} in accounts.",
    "{P} from {O} will join the call on Thursday.",
    "I spoke with {F} yesterday and she said the refund was approved.",
    "Thanks {F}, that fixed it!",
    "Dear {T}, your appointment has been moved to next week.",
    "{T} asked me to send the signed contract to {O}.",
    "We are relocating our team from {L} to {L}.",
    "My sister lives in {L} and works for {O}.",
    "The package was shipped from {L} and should arrive by Friday.",
    "I used to work at {O} before joining {O}.",
    "According to {P}, the new office in {L} opens in June.",
    "Can you ask {F} whether the invoice from {O} was paid?",
    "{P} ({O}) presented the results at the conference in {L}.",
    "Our landlord, {P}, said the heating will be fixed.",
    "Regards, {P}",
    "Flight to {L} confirmed for {P}.",
    "The complaint was escalated to {O} headquarters in {L}.",
    "{F} and {F} are visiting {L} next month.",
    "Reference letter for {P}, formerly of {O}.",
    "I grew up near {L}, but now I live in {L}.",
    "Send the samples to {T} at {O}.",
    "Meeting notes: {P} will draft the proposal, {P} reviews it.",
    "Is {O} still hiring in {L}?",
]
# Sentences without any person, organisation or place.
DECOYS = [
    "Will you send the report by Monday?",
    "May I ask when the update ships?",
    "Hope this helps, let me know.",
    "Bill me later for the extra hours.",
    "Grace period ends on 15 March 2024.",
    "Mark the ticket as resolved, please.",
    "Frank feedback is welcome.",
    "The Galaxy S23 and the iPhone 15 both support it.",
    "Windows 11 broke the printer driver again.",
    "I ordered a PlayStation 5 and two Kindle Paperwhite readers.",
    "Quarterly Budget Review Meeting - Agenda",
    "Please contact the Head of Customer Success.",
    "Our Chief Technology Officer approved the Change Request.",
    "Order #58213377 was delivered on Tuesday, 4 June.",
    "Version 2.4.1 fixes the Login Screen bug.",
    "The Premium Plan costs $49.99 per month.",
    "See you at 10:30 on Wednesday.",
    "Happy New Year from the Support Team!",
    "Rose petals and Amber lights decorated the Hall.",
    "Jack up the car before changing the tyre.",
    "Summer Sale: 20% off all Garden Furniture.",
    "The Terms of Service changed in January.",
    "Click Save, then Export to PDF.",
    "Our Annual General Meeting is in October.",
]


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def _groups(digits: str, sizes, sep: str = " ") -> str:
    out, pos = [], 0
    for n in sizes:
        out.append(digits[pos:pos + n])
        pos += n
    return sep.join(out)


def _phone(r: random.Random) -> tuple[str, str, str]:
    """(country, format, number): a number in a real numbering range of the country, national or international."""
    d = lambda n: _digits(r, n)  # noqa: E731
    country = r.choice(["US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "JP", "BR", "MX", "ZA"])
    intl = r.random() < 0.5
    if country == "US":
        area, ex, line = r.choice(["212", "415", "312", "617", "206", "512", "303", "404"]), f"{r.randint(2, 9)}{d(2)}", d(4)
        s = f"+1 {area} {ex} {line}" if intl else r.choice([f"({area}) {ex}-{line}", f"{area}-{ex}-{line}"])
    elif country == "GB":
        if r.random() < 0.5:
            n = f"20{r.choice('378')}{d(7)}"
            s = f"+44 {_groups(n, (2, 4, 4))}" if intl else f"0{_groups(n, (2, 4, 4))}"
        else:
            n = f"7{r.choice('4579')}{d(8)}"
            s = f"+44 {_groups(n, (4, 6))}" if intl else f"0{_groups(n, (4, 6))}"
    elif country == "DE":
        n = r.choice([f"30{d(8)}", f"89{d(7)}", f"151{d(8)}", f"171{d(7)}"])
        split = 2 if n[:2] in ("30", "89") else 3
        s = f"+49 {n[:split]} {n[split:]}" if intl else f"0{n[:split]} {n[split:]}"
    elif country == "FR":
        n = f"{r.choice('1246')}{d(8)}"
        s = f"+33 {n[0]} {_groups(n[1:], (2, 2, 2, 2))}" if intl else f"0{n[0]} {_groups(n[1:], (2, 2, 2, 2))}"
    elif country == "ES":
        n = r.choice([f"91{d(7)}", f"93{d(7)}", f"6{d(8)}"])
        s = f"+34 {_groups(n, (3, 3, 3))}" if intl else _groups(n, (3, 3, 3))
    elif country == "IT":
        if r.random() < 0.5:
            n = f"06{d(8)}"
            s = f"+39 {_groups(n, (2, 4, 4))}" if intl else _groups(n, (2, 4, 4))
        else:
            n = f"{r.choice(['320', '328', '333', '338', '347', '349', '366', '392'])}{d(7)}"
            s = f"+39 {_groups(n, (3, 3, 4))}" if intl else _groups(n, (3, 3, 4))
    elif country == "NL":
        if r.random() < 0.5:
            n = f"20{d(7)}"
            s = f"+31 {_groups(n, (2, 3, 4))}" if intl else f"0{_groups(n, (2, 3, 4))}"
        else:
            n = f"6{d(8)}"
            s = f"+31 6 {n[1:]}" if intl else f"06-{n[1:]}"
    elif country == "IN":
        if r.random() < 0.6:
            n = f"{r.choice('6789')}{d(9)}"
            s = f"+91 {_groups(n, (5, 5))}" if intl else _groups(n, (5, 5))
        else:
            n = f"22{r.choice('2346')}{d(7)}"
            s = f"+91 {_groups(n, (2, 4, 4))}" if intl else f"0{_groups(n, (2, 4, 4))}"
    elif country == "AU":
        if r.random() < 0.5:
            n = f"2{r.choice('89')}{d(7)}"
            s = f"+61 {_groups(n, (1, 4, 4))}" if intl else f"(0{n[0]}) {_groups(n[1:], (4, 4))}"
        else:
            n = f"4{d(8)}"
            s = f"+61 {_groups(n, (3, 3, 3))}" if intl else f"0{_groups(n, (3, 3, 3))}"
    elif country == "JP":
        if r.random() < 0.5:
            n = f"3{d(8)}"
            s = f"+81 3-{n[1:5]}-{n[5:]}" if intl else f"03-{n[1:5]}-{n[5:]}"
        else:
            n = f"{r.choice(['70', '80', '90'])}{d(8)}"
            s = f"+81 {n[:2]}-{n[2:6]}-{n[6:]}" if intl else f"0{n[:2]}-{n[2:6]}-{n[6:]}"
    elif country == "BR":
        if r.random() < 0.5:
            n = f"119{d(8)}"
            s = f"+55 11 {n[2:7]} {n[7:]}" if intl else f"(11) {n[2:7]}-{n[7:]}"
        else:
            n = f"11{r.choice('2345')}{d(7)}"
            s = f"+55 11 {n[2:6]} {n[6:]}" if intl else f"(11) {n[2:6]}-{n[6:]}"
    elif country == "MX":
        n = f"55{d(8)}"
        s = f"+52 {_groups(n, (2, 4, 4))}" if intl else _groups(n, (2, 4, 4))
    else:  # ZA
        n = r.choice([f"11{d(7)}", f"21{d(7)}", f"82{d(7)}", f"83{d(7)}"])
        s = f"+27 {_groups(n, (2, 3, 4))}" if intl else f"0{_groups(n, (2, 3, 4))}"
    return country, "international" if intl else "national", s


PHONE_TEMPLATES = ["Call me on {} after six.", "My number is {}.", "Phone: {}", "You can reach the clinic at {} "
                   "during office hours.", "Text {} if the courier is late.", "New mobile: {} (old one is gone)."]
PHONE_DECOYS = ["order 4839201857", "on 2024-06-15", "at 14:35:10", "for $1,299.00", "version 10.2.3",
                "ISBN 978-0-306-40615-7", "invoice INV-2024-00731", "account 00123456", "code 7731",
                "room 12-105", "on 03/04/2023", "batch 2024.03.117", "ticket 884-213"]


def _name(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def synthetic_names_set(n: int = 2000, seed: int = 0) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """`n` (text, [(type, start, end)]) examples with types PERSON, ORGANIZATION, LOCATION and PHONE: a third
    entity sentences alone, a third entity sentences with a decoy sentence, a sixth decoys alone, a sixth
    phone sentences (with a decoy number beside them half the time)."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        kind = r.choice(["entities", "entities", "mixed", "mixed", "decoys", "phone"])
        text, spans = "", []

        def add(s: str):
            nonlocal text
            text += (" " if text else "") + s

        if kind == "decoys":
            add(r.choice(DECOYS))
            add(r.choice(DECOYS))
        elif kind == "phone":
            _, _, number = _phone(r)
            before, after = r.choice(PHONE_TEMPLATES).split("{}")
            add(before.rstrip())
            text += (" " if before.endswith(" ") else "")
            spans.append(("PHONE", len(text), len(text) + len(number)))
            text += number + after
            if r.random() < 0.5:
                add(f"(see {r.choice(PHONE_DECOYS)})")
        else:
            if kind == "mixed" and r.random() < 0.5:
                add(r.choice(DECOYS))
            template = r.choice(TEMPLATES)
            text += " " if text else ""
            pos = 0
            while pos < len(template):
                j = template.find("{", pos)
                if j < 0:
                    text += template[pos:]
                    break
                text += template[pos:j]
                slot = template[j + 1]
                if slot == "T":
                    text += r.choice(TITLES) + " "
                    value, typ = r.choice(LAST), "PERSON"
                else:
                    value, typ = {"P": (_name(r), "PERSON"), "F": (r.choice(FIRST), "PERSON"),
                                  "O": (r.choice(ORGS), "ORGANIZATION"), "L": (r.choice(PLACES), "LOCATION")}[slot]
                start = len(text)
                # "the" before an organisation is not part of its name (CoNLL leaves it out too)
                if typ == "ORGANIZATION" and value.startswith("the "):
                    start += 4
                spans.append((typ, start, len(text) + len(value)))
                text += value
                pos = j + 3
            if kind == "mixed" and not text.startswith(tuple(DECOYS)):
                add(r.choice(DECOYS))
        out.append((text, spans))
    return out


def phone_formats_set(per_format: int = 40, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """(country, format, text, number) for every country and format, `per_format` each, in a sentence."""
    r = random.Random(seed)
    want = {(c, f): 0 for c in ["US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "JP", "BR", "MX", "ZA"]
            for f in ("national", "international")}
    out = []
    while any(v < per_format for v in want.values()):
        country, fmt, number = _phone(r)
        if want[country, fmt] >= per_format:
            continue
        want[country, fmt] += 1
        out.append((country, fmt, r.choice(PHONE_TEMPLATES).format(number), number))
    return out


TYPES = ("PERSON", "ORGANIZATION", "LOCATION", "PHONE")


def score(examples, predict) -> dict[str, dict[str, float]]:
    """Per-type precision and recall, by exact span and by overlap (a predicted span of the right type that
    overlaps a gold one), of `predict(texts) -> [[(type, start, end)]]` on the examples."""
    preds = predict([t for t, _ in examples])
    exact, loose = {k: Counter() for k in ("tp", "fp", "fn")}, {k: Counter() for k in ("tp", "fp", "fn")}
    for (text, gold), pred in zip(examples, preds):
        pred = {p for p in pred if p[0] in TYPES}
        gold = set(gold)
        for t, *_ in pred & gold:
            exact["tp"][t] += 1
        for t, *_ in pred - gold:
            exact["fp"][t] += 1
        for t, *_ in gold - pred:
            exact["fn"][t] += 1
        hit = lambda a, bs: any(a[0] == b[0] and a[1] < b[2] and b[1] < a[2] for b in bs)  # noqa: E731
        for g in gold:
            loose["tp" if hit(g, pred) else "fn"][g[0]] += 1
        for p in pred:
            if not hit(p, gold):
                loose["fp"][p[0]] += 1
    out = {}
    for t in TYPES:
        row = {"support": exact["tp"][t] + exact["fn"][t]}
        for name, c in (("", exact), ("overlap_", loose)):
            row[f"{name}precision"] = c["tp"][t] / (c["tp"][t] + c["fp"][t]) if c["tp"][t] + c["fp"][t] else 1.0
            row[f"{name}recall"] = c["tp"][t] / (c["tp"][t] + c["fn"][t]) if c["tp"][t] + c["fn"][t] else 1.0
        out[t] = row
    return out
