"""Synthetic learnable tasks and file writers for the task tests (imported by conftest and the tests)."""
import csv
import json
import random
from pathlib import Path

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango").split()
MARKER = "zulu"
LABELS = ("yes", "no")


def marker_sentence(rng: random.Random, marker: bool) -> str:
    words = rng.sample(WORDS, 5)
    if marker:
        words[rng.randrange(5)] = MARKER
    return " ".join(words)


def marker_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """label = whether the marker word occurs: learnable by every family in a few dozen steps."""
    rng = random.Random(seed)
    return [(marker_sentence(rng, i % 2 == 0), "yes" if i % 2 == 0 else "no") for i in range(n)]


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
