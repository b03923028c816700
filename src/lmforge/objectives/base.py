"""What the objectives share: the batch of packed blocks they receive and their per-example random streams.

Every random choice an objective makes for an example comes from a generator keyed on (seed, [epoch,] block
index) and nothing else. So the same block gets the same mask whichever batch, rank or process serves it: a
resumed run replays exactly, N ranks see what one process with N-times the accumulation sees, and static
masking (keyed without the epoch) is identical in every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Blocks:
    """A batch of packed blocks, as the data pipeline serves them.

    input_ids (B, L) int64, padded with the pad id past `lengths`; `index` (B,) each block's number in its
    split (the key of its random stream); `token_type_ids` (B, L) and `next_sentence_label` (B,) for
    sentence-pair layouts (BERT with NSP), else None.
    """

    input_ids: np.ndarray
    lengths: np.ndarray
    index: np.ndarray
    token_type_ids: np.ndarray | None = None
    next_sentence_label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def example_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on (seed, *keys)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *(int(k) for k in keys)]))


def attention_mask(lengths: np.ndarray, width: int) -> torch.Tensor:
    """(B, width) long, 1 for the first `lengths[b]` positions (the public convention: 1 = keep)."""
    return torch.from_numpy((np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64))


def pad_rows(rows: list[np.ndarray], width: int, value: int) -> np.ndarray:
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def epochs_of(blocks: Blocks, epoch) -> np.ndarray:
    """The epoch each block is served in: one int for the batch, or one per block (a batch spanning epochs)."""
    return np.broadcast_to(np.asarray(epoch, dtype=np.int64), (len(blocks),))
