"""The task registry: `registry.yaml` read once and checked by one schema (`TaskSpec`).

A task says what kind of problem it is, where its local copy lives and how to read it, how an example
becomes text for T5 (text-to-text) and GPT-2 (prompt-and-generate), its labels and its metrics.
"""
from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..evaluation.metrics import METRICS
from ..models import ModelError

KINDS = ("classification", "qa", "summarization", "translation", "generation", "ner")
# The fields an example of each kind carries once read (see readers.py); templates may use only these.
KIND_FIELDS = {
    "classification": ("text", "text_pair", "label"),
    "qa": ("question", "context", "answers"),
    "summarization": ("document", "summary"),
    "translation": ("source", "target"),
    "generation": ("text",),
    "ner": ("text", "entities"),
}
# GPT-2 reads the T5-style input followed by a cue on a new line and continues with the target (the
# "TL;DR:" cue is the GPT-2 paper's summarisation prompt, section 3.6).
CUES = {"classification": "Label:", "qa": "Answer:", "summarization": "TL;DR:", "translation": "Translation:"}
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    folder: str
    format: Literal["tsv", "csv", "jsonl", "squad", "parallel", "text", "conll"]
    header: bool = True
    columns: tuple[str, ...] | None = None
    splits: dict[str, str | tuple[str, ...]]
    holdout: float | None = Field(default=None, gt=0, lt=1)
    strip_gutenberg: bool = False
    tag_scheme: Literal["iob1", "iob2", "bioes"] | None = None  # conll: the files' tags (read as IOB2)

    @model_validator(mode="after")
    def _check(self):
        if "train" not in self.splits:
            raise ValueError("splits needs a 'train' entry")
        if self.format in ("tsv", "csv") and not self.header and not self.columns:
            raise ValueError("a file without a header needs 'columns'")
        if self.format == "parallel" and any(isinstance(f, str) or len(f) != 2 for f in self.splits.values()):
            raise ValueError("parallel splits are [source file, target file]")
        return self


class TaskSpec(_Strict):
    name: str
    kind: Literal["classification", "qa", "summarization", "translation", "generation", "ner"]
    description: str = ""
    data: DataSpec | None = None  # None: the user's own files
    fields: dict[str, str] = {}
    labels: dict[str, str] | None = None
    positive_label: str | None = None
    input: str | None = None
    input_pair: str | None = None
    metrics: tuple[str, ...]

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v):
        unknown = [m for m in v if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _check(self):
        allowed = KIND_FIELDS[self.kind]
        for key in self.fields:
            if key not in allowed:
                raise ValueError(f"field {key!r} is not one of a {self.kind} example's fields: {', '.join(allowed)}")
        for name in ("input", "input_pair"):
            template = getattr(self, name)
            if template is not None:
                used = [f for _, f, _, _ in string.Formatter().parse(template) if f]
                bad = [f for f in used if f not in allowed]
                if bad:
                    raise ValueError(f"{name} uses {{{bad[0]}}}, not a {self.kind} field ({', '.join(allowed)})")
        if self.kind not in ("generation", "ner") and self.input is None:
            raise ValueError(f"a {self.kind} task needs an 'input' template for text-to-text models")
        if self.positive_label is not None and self.labels is not None and self.positive_label not in self.labels.values():
            raise ValueError(f"positive_label {self.positive_label!r} is not one of the label names")
        return self

    @property
    def is_user(self) -> bool:
        """A task for the user's own files (no local copy to read)."""
        return self.data is None

    def label_names(self) -> list[str] | None:
        return list(self.labels.values()) if self.labels else None

    def text_input(self, example: dict) -> str:
        """The example as T5 reads it (`sst2 sentence: …`)."""
        template = self.input_pair if example.get("text_pair") is not None and self.input_pair else self.input
        return template.format(**{k: v for k, v in example.items() if isinstance(v, str)})

    def prompt(self, example: dict) -> str:
        """The example as GPT-2 reads it: the text-to-text input, then a cue line the target continues."""
        return f"{self.text_input(example)}\n{CUES[self.kind]}"


@functools.cache
def registry(path: Path = REGISTRY_FILE) -> dict[str, TaskSpec]:
    """All tasks by name, validated; a bad entry raises ModelError naming the task and the field."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ModelError(f"{path} must map task names to task entries")
    tasks = {}
    for name, entry in raw.items():
        try:
            tasks[name] = TaskSpec(name=name, **(entry or {}))
        except (ValidationError, TypeError) as e:
            raise ModelError(f"{path}: task {name!r} is invalid: {_first_error(e)}") from None
    return tasks


def get_task(name: str) -> TaskSpec:
    tasks = registry()
    if name not in tasks:
        raise ModelError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name]


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}" if where else err["msg"]
    return str(e)
