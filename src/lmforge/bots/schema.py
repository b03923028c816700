"""The one schema for bots as data: templates (`bots/templates/*.yaml`) and bot exports validate against it."""
from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TEMPLATES = Path(__file__).with_name("templates")


class IntentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\- ]+$")
    examples: list[str] = []
    answer: str = ""

    @field_validator("examples")
    @classmethod
    def _strip(cls, v: list[str]) -> list[str]:
        return [e.strip() for e in v if e.strip()]


class DocumentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    text: str


class BotSpec(BaseModel):
    """A bot (or a template for one): what the builder's form and intents table edit."""

    model_config = ConfigDict(extra="forbid")
    title: str = ""
    """A template's display name."""
    description: str = ""
    name: str = Field(min_length=1, max_length=100)
    purpose: str = ""
    greeting: str = "Hello! How can I help?"
    fallback: str = "Sorry, I don't know that yet. A person will get back to you."
    threshold: float = Field(0.6, ge=0, le=1)
    """Answers whose confidence is below this go to the knowledge base, then to the fallback."""
    intents: list[IntentSpec] = []
    documents: list[DocumentSpec] = []

    @field_validator("intents")
    @classmethod
    def _unique(cls, v: list[IntentSpec]) -> list[IntentSpec]:
        names = [i.name for i in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"intent names must be unique; repeated: {', '.join(sorted(dup))}")
        return v


@lru_cache
def templates() -> dict[str, BotSpec]:
    """id (file stem) -> template, validated; a broken template file fails loudly at first use."""
    out = {}
    for path in sorted(TEMPLATES.glob("*.yaml")):
        try:
            out[path.stem] = BotSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, ValidationError) as e:
            raise ValueError(f"bot template {path.name} is invalid: {e}") from None
    return out


# ------------------------------------------------------------------------------------ intents as CSV

CSV_COLUMNS = ["intent", "example", "answer"]


def intents_to_csv(intents: list[IntentSpec]) -> str:
    """One row per example (`intent,example,answer`); an intent without examples gets one row with none."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for it in intents:
        for ex in it.examples or [""]:
            w.writerow([it.name, _safe_cell(ex), _safe_cell(it.answer)])
    return buf.getvalue()


def _safe_cell(value: str) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheets (CSV injection); quote it as text.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def intents_from_csv(text: str) -> list[IntentSpec]:
    """Parse `intent,example,answer` rows (header required); rows of one intent are merged, the last
    non-empty answer wins. Raises ValueError naming the line of a bad row."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:3] != CSV_COLUMNS:
        raise ValueError("the CSV must start with the header row: intent,example,answer")
    merged: dict[str, IntentSpec] = {}
    for line, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 3:
            row = row + [""] * (3 - len(row))
        name, example, answer = (c.strip() for c in row[:3])
        try:
            spec = merged.setdefault(name, IntentSpec(name=name))
        except ValidationError:
            raise ValueError(f"line {line}: intent name {name!r} must be letters, digits, spaces, - or _") from None
        if example:
            spec.examples.append(example)
        if answer:
            spec.answer = answer
    return list(merged.values())
