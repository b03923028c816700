"""XLNet's permutation language modelling (Yang et al. 2019, §2.2–2.3 and appendix A.2).

For each block a factorization order is sampled. With partial prediction only the last 1/K of the order
(K = 6) is predicted; the first part is the context. Following the reference code (zihangdai/xlnet
`data_utils._local_perm`, also Hugging Face's `DataCollatorForPermutationLanguageModeling`) the context
tokens share the earliest rank: they see each other in both directions and never see a target. A target
sees the context and the targets earlier in the order. Special tokens (<sep>, <cls>, padding) are never
targets and are context.

    rank:        c  c  2  c  0  c  1        c = context (rank -1), targets ranked 0..n-1 in the sampled order
    perm_mask[i, j] = 1  (i may NOT attend to j)  iff  j is a target and rank[j] >= rank[i]

So target i's query stream sees neither its own content nor any later target (perm_mask[i, i] = 1); the
model's content stream adds the diagonal back. `target_mapping` (B, M, T) has one row per target, in
position order, and `labels` (B, M) the original ids (-100 on rows that pad a shorter block).

Span-based order (`span=True`, the paper's §2.3/A.2 "span-based prediction", `data_utils._sample_mask`):
targets are whole n-grams, n ≤ 5 drawn with p ∝ 1/n, each with about (K - 1)·n context tokens around it;
their order is again random.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .base import Blocks, attention_mask, epochs_of, example_rng

IGNORE = -100


@dataclass
class PermutationLM:
    special_ids: tuple[int, ...]  # <sep>, <cls>, <pad>, …: never predicted
    vocab_size: int
    k: int = 6  # partial prediction: predict 1/K of the tokens
    span: bool = False
    max_span: int = 5
    seed: int = 0
    task: str = field(default="lm", init=False)
    shift_labels: bool = field(default=False, init=False)

    def __post_init__(self):
        special = np.zeros(self.vocab_size, dtype=bool)
        special[[i for i in self.special_ids if 0 <= i < self.vocab_size]] = True
        self._special = special

    def num_predict(self, candidates: int) -> int:
        return max(1, round(candidates / self.k)) if candidates else 0

    def sample(self, ids: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        """The rank of every position: -1 for context, 0..n-1 for the targets in their factorization order."""
        candidates = np.flatnonzero(~self._special[ids[:length]])
        n = self.num_predict(len(candidates))
        if self.span:
            targets = candidates[self._span_targets(len(candidates), n, rng)]
        else:
            # the last n of a uniformly random order of the candidates
            targets = candidates[rng.permutation(len(candidates))[len(candidates) - n:]]
        rank = np.full(len(ids), -1, dtype=np.int64)
        rank[targets] = rng.permutation(n)  # the order among the targets
        return rank

    def _span_targets(self, length: int, goal: int, rng: np.random.Generator) -> np.ndarray:
        """XLNet's `_sample_mask`: n-grams with context around them until `goal` tokens are chosen."""
        chosen = np.zeros(length, dtype=bool)
        grams = np.arange(1, self.max_span + 1)
        p = 1.0 / grams
        p /= p.sum()
        num, cur = 0, 0
        while cur < length and num < goal:
            n = min(int(rng.choice(grams, p=p)), goal - num)
            ctx = n * self.k - n  # mask_alpha = K, mask_beta = 1: a span of n in about n*K tokens
            left = int(rng.integers(ctx)) if ctx > 0 else 0
            beg = cur + left
            if beg >= length:
                break
            end = min(beg + n, length)
            chosen[beg:end] = True
            num += end - beg
            cur = end + ctx - left
        if num < goal:  # top up with single tokens, as the reference does
            free = np.flatnonzero(~chosen)
            chosen[rng.choice(free, size=goal - num, replace=False)] = True
        return np.flatnonzero(chosen)

    @staticmethod
    def perm_mask(rank: np.ndarray) -> np.ndarray:
        """(T, T): 1 where i may not attend to j (see the module docstring)."""
        is_target = rank >= 0
        return ((rank[:, None] <= rank[None, :]) & is_target[None, :]).astype(np.float32)

    def __call__(self, blocks: Blocks, epoch=0) -> dict[str, torch.Tensor]:
        B, T = blocks.input_ids.shape
        ranks = [self.sample(ids, int(n), example_rng(self.seed, ep, idx))
                 for ids, n, idx, ep in zip(blocks.input_ids, blocks.lengths, blocks.index, epochs_of(blocks, epoch))]
        M = max(int((r >= 0).sum()) for r in ranks)
        perm = np.zeros((B, T, T), dtype=np.float32)
        mapping = np.zeros((B, M, T), dtype=np.float32)
        labels = np.full((B, M), IGNORE, dtype=np.int64)
        for b, rank in enumerate(ranks):
            perm[b] = self.perm_mask(rank)
            targets = np.flatnonzero(rank >= 0)  # position order
            mapping[b, np.arange(len(targets)), targets] = 1.0
            labels[b, : len(targets)] = blocks.input_ids[b, targets]
        out = {
            "input_ids": torch.from_numpy(blocks.input_ids.astype(np.int64)),
            "attention_mask": attention_mask(blocks.lengths, T),
            "perm_mask": torch.from_numpy(perm),
            "target_mapping": torch.from_numpy(mapping),
            "labels": torch.from_numpy(labels),
        }
        if blocks.token_type_ids is not None:
            out["token_type_ids"] = torch.from_numpy(blocks.token_type_ids.astype(np.int64))
        return out
