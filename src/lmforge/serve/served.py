"""The models a server serves: loading one by name (any folder, GGUF file or packaged name `lmforge.load`
takes), putting its weights in int8 where that keeps quality, its chat template, its card, and its engine."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..chat_template import ChatTemplate, end_of_sequence_ids, template_for
from ..generate import context_length
from ..models.quantize import calibration_text, quantize
from .cards import ModelFacts, facts
from .engine import Engine, QueueLimits
from .metrics import Metrics

EMBEDDING_FAMILIES = ("bert", "roberta")
# Decoders whose quality int8 keeps. Not the Llama family: SmolLM2-135M (weights already 4-bit) keeps 91% of
# its greedy tokens under int8 and its perplexity rises 10%, enough to turn coherent answers into loops
# (docs/performance.md); `--quantize int8` still gives it 1.6-1.8x the speed.
INT8_FAMILIES = ("gpt2",)


@dataclass
class ServedModel:
    """A model the API serves under `name`: a generator (with an engine) or an embedder."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    kind: Literal["generate", "embed"]
    card: ModelFacts
    chat_template: ChatTemplate | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    engine: Engine | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # embedders run one batch at a time

    @property
    def context_length(self) -> int:
        return self.card.context_length

    def start(self, metrics: Metrics | None, max_rows: int, limits: QueueLimits | None = None,
              threads: int | None = None) -> "ServedModel":
        if self.kind == "generate" and self.engine is None:
            stop_ids = end_of_sequence_ids(self.model, self.tokenizer, self.chat_template)
            self.engine = Engine(self.name, self.model, self.tokenizer, metrics, max_rows, stop_ids, limits,
                                 threads).start()
        return self

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None


def default_quantization(model, kind: str) -> str:
    """int8 for the decoders it keeps quality for, on the CPU in float32; float weights otherwise."""
    on_cpu_fp32 = model.device.type == "cpu" and next(model.parameters()).dtype == torch.float32
    return "int8" if kind == "generate" and model.family in INT8_FAMILIES and on_cpu_fp32 else "none"


def serve_model(model, tokenizer, name: str, quantization: str = "none") -> ServedModel:
    """Wrap a loaded model: encoder-only families (and T5 encoders) embed, the rest generate.
    `quantization`: "none", "int8", or "auto" (`default_quantization`)."""
    if tokenizer is None:
        raise ValueError(f"{name} has no tokenizer files, so it cannot be served")
    model.eval()
    kind = "embed" if model.family in EMBEDDING_FAMILIES or model.task in ("encoder", "base") else "generate"
    if quantization == "auto":
        quantization = default_quantization(model, kind)
    ctx = getattr(model.config, "max_position_embeddings", 512) if kind == "embed" else context_length(model)
    calibration = tokenizer.encode(calibration_text())[: min(ctx, 512)] if quantization != "none" else None
    if kind == "embed":
        card = facts(name, model, kind, ctx, quantization, False)
        return ServedModel(name, quantize(model, quantization, calibration), tokenizer, kind, card)
    template = template_for(tokenizer, model.family, name)
    card = facts(name, model, kind, ctx, quantization, tokenizer.chat_template is not None)
    return ServedModel(name, quantize(model, quantization, calibration), tokenizer, kind, card, template)


def load_served(name_or_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                quantization: str = "auto") -> ServedModel:
    """Load a folder, file or name (anything `lmforge.load` takes) for serving, named after its folder."""
    from ..hub import load, resolve

    folder = resolve(name_or_path)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    task = "base" if config.get("model_type") in EMBEDDING_FAMILIES else None
    model, tokenizer = load(name_or_path, task=task, dtype=dtype)
    model.to(device)
    path = Path(name_or_path).expanduser()
    name = path.stem if path.is_file() else path.name if path.exists() else str(name_or_path)
    return serve_model(model, tokenizer, name, quantization)
