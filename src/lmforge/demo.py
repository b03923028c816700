"""What `make serve` shows until the API server exists: the zoo working on this machine, offline."""
from __future__ import annotations

import tempfile

import torch
from rich.console import Console
from rich.table import Table

from .models.hf_io import FAMILIES, load_model, model_class
from .models.presets import TINY, make_config

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply today.",
]


def run_demo(console: Console) -> None:
    from . import load

    model, tok = load("all-MiniLM-L6-v2", task="base")
    batch = tok(SENTENCES, padding=True)
    sims = (lambda v: v @ v.T)(model.embed(batch["input_ids"], batch["attention_mask"]))
    table = Table(title="all-MiniLM-L6-v2 sentence similarity (lmforge BERT, offline weights)")
    table.add_column("sentence")
    for i in range(len(SENTENCES)):
        table.add_column(f"#{i}")
    for i, s in enumerate(SENTENCES):
        table.add_row(f"#{i} {s}", *(f"{x:.2f}" for x in sims[i].tolist()))
    console.print(table)

    table = Table(title="each family: tiny random model -> save_pretrained -> load -> same logits")
    for col in ("family", "task", "parameters", "max |diff|"):
        table.add_column(col)
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (2, 12))
    for model_type in FAMILIES:
        cls = model_class(model_type)
        task = "lm"
        m = cls(make_config(model_type, **TINY), task).eval()
        kwargs = {"decoder_input_ids": ids[:, :4]} if cls.family == "t5" else {}
        with tempfile.TemporaryDirectory() as d, torch.no_grad():
            m.save_pretrained(d)
            again = load_model(d)
            diff = (m(ids, **kwargs).logits - again(ids, **kwargs).logits).abs().max().item()
        name = cls.family if cls.family == model_type else f"{cls.family} ({model_type})"  # llama (mistral), ...
        table.add_row(name, task, f"{m.num_parameters():,}", f"{diff:.1e}")
    console.print(table)
