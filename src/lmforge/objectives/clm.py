"""Causal language modelling (GPT-2, Radford et al. 2019): every token predicts the next one.

Blocks come densely packed (documents joined by the end-of-text token, `data.packing.Contiguous`), so there is
no padding in practice; labels are the inputs themselves, and the model shifts them (Hugging Face's convention).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Blocks, attention_mask

IGNORE = -100


@dataclass
class CausalLM:
    task: str = field(default="lm", init=False)
    shift_labels: bool = field(default=True, init=False)  # logits at t are scored against labels at t + 1

    def __call__(self, blocks: Blocks, epoch=0) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(blocks.input_ids.astype("int64"))
        mask = attention_mask(blocks.lengths, ids.shape[1])
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE)}
