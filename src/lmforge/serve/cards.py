"""Model cards: one honest line per served model (what it is, what to expect) with the facts read off the
loaded model, for `/v1/models` and the studio's model picker. The prose lives in `model_cards.yaml`."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

CARDS = Path(__file__).with_name("model_cards.yaml")


class CardFile(BaseModel):
    """The schema of model_cards.yaml."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, str]


class ModelFacts(BaseModel):
    """What a user needs to pick a model: served as `metadata` on each `/v1/models` entry."""

    description: str
    family: str
    kind: str  # "generate" or "embed"
    parameters: int
    context_length: int
    quantization: str  # "none" or "int8"
    demo: bool  # a demo-sized model trained here: not for real answers
    chat_template: bool  # the model brings its own chat template


@lru_cache(maxsize=2)
def _cards(path: Path = CARDS) -> dict[str, str]:
    return CardFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))).models


def facts(name: str, model, kind: str, context_length: int, quantization: str, own_template: bool) -> ModelFacts:
    """The card of a model as loaded (before quantization swaps its Linear weights out of `parameters()`)."""
    description = _cards().get(name) or f"A {model.family} model ({name})."
    return ModelFacts(description=" ".join(description.split()), family=model.family, kind=kind,
                      parameters=model.num_parameters(), context_length=context_length, quantization=quantization,
                      demo=name.startswith("demo-"), chat_template=own_template)
