"""The bundled demo models: one small pretrained checkpoint per family, with its tokenizer and card.

Built by `scripts/train_demo_models.py` (public-domain text, the family's own objective, float16 weights).
`path("gpt2")` is a folder `lmforge.load` reads; `available()` lists the families present.
"""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
FAMILIES = ("bert", "roberta", "gpt2", "xlnet", "t5")


def available() -> list[str]:
    return [f for f in FAMILIES if (FOLDER / f / "config.json").is_file()]


def path(family: str) -> Path:
    """The folder of the `family` demo model."""
    folder = FOLDER / family
    if not (folder / "config.json").is_file():
        from ..models import ModelError

        raise ModelError(f"no bundled demo model for {family!r}; bundled: {', '.join(available()) or 'none'} "
                         "(rebuild them with scripts/train_demo_models.py)")
    return folder
