"""Logits processors: each maps (token history, next-token logits) to new logits.

A pipeline of these is the one place sampling settings act, so later features (watermarking,
moderation) plug in as one more processor without touching the decoding loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


class LogitsProcessor(Protocol):
    def __call__(self, generated: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """generated: (B, t) tokens produced so far (prompt excluded); logits: (B, V) float32."""


@dataclass
class Temperature:
    value: float

    def __call__(self, generated, logits):
        return logits / self.value


@dataclass
class TopK:
    k: int

    def __call__(self, generated, logits):
        k = min(self.k, logits.shape[-1])
        kth = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


@dataclass
class TopP:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of tokens whose probability reaches p."""

    p: float

    def __call__(self, generated, logits):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens before it already reach p; the most likely token always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= self.p
        drop_sorted[:, 0] = False  # even when rounding makes the first token's "before" reach p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


@dataclass
class Penalties:
    """OpenAI's presence and frequency penalties, on tokens generated so far (not the prompt)."""

    presence: float = 0.0
    frequency: float = 0.0

    def __call__(self, generated, logits):
        if generated.shape[1] == 0:
            return logits
        counts = torch.zeros_like(logits).scatter_add_(-1, generated, torch.ones_like(generated, dtype=logits.dtype))
        return logits - self.frequency * counts - self.presence * (counts > 0).to(logits.dtype)


@dataclass
class LogitBias:
    """OpenAI's `logit_bias`: token id -> value added to its logit (-100 bans it, 100 forces it)."""

    bias: dict[int, float]
    _tensors: tuple | None = field(default=None, init=False, repr=False, compare=False)  # made on first use

    def __call__(self, generated, logits):
        if self._tensors is None or self._tensors[0].device != logits.device:
            self._tensors = (torch.tensor(list(self.bias), device=logits.device),
                             torch.tensor(list(self.bias.values()), dtype=torch.float32, device=logits.device))
        ids, values = self._tensors
        return logits.index_add(-1, ids, values.to(logits.dtype).expand(logits.shape[0], -1))


class Pipeline(list):
    """Processors applied in order."""

    def __call__(self, generated: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        for processor in self:
            logits = processor(generated, logits)
        return logits
