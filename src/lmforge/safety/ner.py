"""The named-entity model lmforge ships: MiniLM (`all-MiniLM-L6-v2`) fine-tuned on CoNLL-2003 (PER, ORG, LOC,
MISC), stored as its quantized difference from the installed MiniLM (`lmforge.tasks.delta`) in
`safety/data/ner-minilm/`, rebuilt into a full model on first use (about a second) and kept.

    from lmforge.safety.ner import load_tagger
    load_tagger().tag("Ann Lee joined Acme Corp in Paris.")
    # [{"type": "PER", "start": 0, "end": 7, ...}, {"type": "ORG", ...}, {"type": "LOC", ...}]

`LMFORGE_PII_NER=0` turns the model off for PII detection (names are then not found; see pii.py).
"""
from __future__ import annotations

import functools
import logging
import os
from importlib.resources import files
from pathlib import Path

from ..models import ModelError

log = logging.getLogger(__name__)

MODEL_DIR = Path(str(files("lmforge") / "safety" / "data" / "ner-minilm"))
ENV_SWITCH = "LMFORGE_PII_NER"


def shipped() -> bool:
    """Whether the package holds the model (its delta and config)."""
    return (MODEL_DIR / "delta.safetensors").is_file() and (MODEL_DIR / "config.json").is_file()


def enabled() -> bool:
    """Whether PII detection should use the model: it ships, the base MiniLM is installed, and the
    environment does not turn it off."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return shipped() and _base_installed()


@functools.cache
def _base_installed() -> bool:
    try:
        from ..hub import resolve

        resolve("all-MiniLM-L6-v2")
        return True
    except Exception:  # noqa: BLE001 - not installed, offline: simply not available
        return False


@functools.cache
def load_tagger(batch_size: int = 32):
    """The shipped tagger as a `lmforge.tasks.Predictor` (mode "tag"), built once per process."""
    import json

    from ..hub import load
    from ..tasks.delta import read_delta
    from ..tasks.inference import TASK_FILE, Predictor
    from ..tasks.registry import TaskSpec

    if not shipped():
        raise ModelError(f"the NER model is not in this installation ({MODEL_DIR} is missing)")
    try:
        base, tok = load("all-MiniLM-L6-v2", task="base")
    except ModelError as e:
        raise ModelError(f"the NER model is rebuilt from all-MiniLM-L6-v2, which could not be loaded: {e}") from None
    model = read_delta(MODEL_DIR, base=base)
    del base
    meta = json.loads((MODEL_DIR / TASK_FILE).read_text(encoding="utf-8"))
    return Predictor(model, tok, TaskSpec(**meta["task"]), meta["mode"], max_length=meta.get("max_length", 128),
                     batch_size=batch_size)


def export(folder) -> Path:
    """Write the rebuilt model as a full Hugging Face folder (`BertForTokenClassification`, tokenizer, card),
    for `transformers` or anything else that reads such folders."""
    import shutil

    p = load_tagger()
    folder = Path(folder)
    p.model.save_pretrained(folder)
    p.tokenizer.save_pretrained(folder)
    p.save_meta(folder)
    if (MODEL_DIR / "README.md").is_file():
        shutil.copy(MODEL_DIR / "README.md", folder / "README.md")
    return folder
