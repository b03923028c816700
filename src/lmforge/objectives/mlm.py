"""Masked language modelling: BERT (static masks, optional next-sentence prediction) and RoBERTa (dynamic masks).

Devlin et al. 2019, §3.1 and appendix A.1; reference: google-research/bert `create_pretraining_data.py`
(`create_masked_lm_predictions`). 15% of the non-special tokens of a block are chosen as targets; of those,
80% become the mask token, 10% a random token and 10% stay as they are. The chosen count is
`round(0.15 * candidates)` (at least one), as in BERT's preprocessing; the 80/10/10 split is drawn per token.

Static (BERT): the mask of a block is drawn once, from (seed, block index), so every epoch sees the same mask,
which is what precomputing the masks at preprocessing gives (BERT's `dupe_factor=1`) without storing a second
copy of the corpus. Dynamic (RoBERTa, Liu et al. 2019 §4.1): the key adds the epoch, so each time a block is
served it gets a new mask. Next-sentence pairs are built by the data pipeline (`data.packing.SentencePairs`);
this collator passes their `token_type_ids` and `next_sentence_label` through.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from .base import Blocks, attention_mask, epochs_of, example_rng

IGNORE = -100


@dataclass
class MaskedLM:
    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # never chosen as targets, never drawn as random replacements
    dynamic: bool = True
    nsp: bool = False  # pass next_sentence_label (BERT task "pretraining")
    probability: float = 0.15
    replace_mask: float = 0.8
    replace_random: float = 0.1
    seed: int = 0
    shift_labels: bool = field(default=False, init=False)  # labels align with logits position for position
    # The trainer's forward computes the MLM head only at labelled positions (same loss, ~1/3 fewer FLOPs).
    train_kwargs: ClassVar[dict] = {"sparse_logits": True}

    def __post_init__(self):
        special = np.zeros(self.vocab_size, dtype=bool)
        special[[i for i in self.special_ids if 0 <= i < self.vocab_size]] = True
        self._special = special
        self._random_pool = np.flatnonzero(~special)  # replacement tokens: any non-special id

    @property
    def task(self) -> str:
        return "pretraining" if self.nsp else "lm"

    def mask(self, ids: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One block: (inputs, labels), labels = the original id at chosen positions and -100 elsewhere."""
        inputs = ids.copy()
        labels = np.full_like(ids, IGNORE)
        candidates = np.flatnonzero(~self._special[ids[:length]])
        if len(candidates) == 0:
            return inputs, labels
        n = max(1, int(round(len(candidates) * self.probability)))
        chosen = rng.choice(candidates, size=n, replace=False)
        labels[chosen] = ids[chosen]
        u = rng.random(n)
        to_mask = chosen[u < self.replace_mask]
        to_random = chosen[(u >= self.replace_mask) & (u < self.replace_mask + self.replace_random)]
        inputs[to_mask] = self.mask_token_id
        inputs[to_random] = self._random_pool[rng.integers(len(self._random_pool), size=len(to_random))]
        return inputs, labels

    def __call__(self, blocks: Blocks, epoch=0) -> dict[str, torch.Tensor]:
        inputs, labels = [], []
        for ids, length, idx, ep in zip(blocks.input_ids, blocks.lengths, blocks.index, epochs_of(blocks, epoch)):
            rng = example_rng(self.seed, ep, idx) if self.dynamic else example_rng(self.seed, idx)
            x, y = self.mask(ids, int(length), rng)
            inputs.append(x)
            labels.append(y)
        out = {
            "input_ids": torch.from_numpy(np.stack(inputs)),
            "attention_mask": attention_mask(blocks.lengths, blocks.input_ids.shape[1]),
            "labels": torch.from_numpy(np.stack(labels)),
        }
        if blocks.token_type_ids is not None:
            out["token_type_ids"] = torch.from_numpy(blocks.token_type_ids.astype(np.int64))
        if self.nsp:
            if blocks.next_sentence_label is None:
                raise ValueError("next-sentence prediction needs sentence-pair blocks (data.packing.SentencePairs)")
            out["next_sentence_label"] = torch.from_numpy(blocks.next_sentence_label.astype(np.int64))
        return out
