"""T5's span corruption (Raffel et al. 2020, §3.1.4; reference: google-research/text-to-text-transfer-transformer
`t5/data/preprocessors.py`: `random_spans_noise_mask`, `compute_input_and_target_lengths`).

15% of the tokens (noise density), in spans of mean length 3, are cut out. Each span becomes one sentinel in
the input; the target lists the sentinels, each followed by the span it replaced:

    original  The  cute  dog  walks  in  the  park
    input     The  <extra_id_0>  walks  <extra_id_1>  park  </s>
    target    <extra_id_0>  cute  dog  <extra_id_1>  in  the  </s>

`compute_input_and_target_lengths` finds the raw block length whose corrupted input is exactly the encoder
length (512 → 568 raw tokens, 114 target tokens), so packed blocks fit with no padding at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .base import Blocks, attention_mask, epochs_of, example_rng, pad_rows

IGNORE = -100


def _lengths(tokens_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    num_noise = round(tokens_length * noise_density)
    num_spans = round(num_noise / mean_noise_span_length)
    # inputs: the kept tokens, a sentinel per span, EOS; targets: the noise, a sentinel per span, EOS
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def compute_input_and_target_lengths(inputs_length: int, noise_density: float = 0.15,
                                     mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(raw tokens per block, target length) so that the corrupted input is at most `inputs_length` (T5's code)."""
    tokens_length = inputs_length
    while _lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = _lengths(tokens_length, noise_density, mean_noise_span_length)
    if noise_density == 0.5 and targets_length > inputs_length:  # T5's tweak to keep targets <= inputs
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def random_spans_noise_mask(length: int, rng: np.random.Generator, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> np.ndarray:
    """Boolean (length,): True on noise. Spans alternate kept/noise, starting with a kept span (T5's code)."""
    orig_length = length
    length = max(length, 2)  # at least one noise and one kept token
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    num_kept = length - num_noise

    def segmentation(num_items: int, num_segments: int) -> np.ndarray:
        """Random split of num_items into num_segments non-empty parts."""
        first_in_segment = np.zeros(num_items, dtype=np.int64)
        first_in_segment[1:] = rng.permutation(np.arange(num_items - 1) < num_segments - 1)
        segment_id = np.cumsum(first_in_segment)
        return np.bincount(segment_id, minlength=num_segments)

    noise_lengths = segmentation(num_noise, num_spans)
    kept_lengths = segmentation(num_kept, num_spans)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, kept, noise, …
    span_starts = np.cumsum(interleaved)[:-1]
    start_indicator = np.zeros(length, dtype=np.int64)
    start_indicator[span_starts] = 1
    is_noise = np.cumsum(start_indicator) % 2 == 1
    return is_noise[:orig_length]


def splice(tokens: np.ndarray, noise: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Replace each run of `noise` by the next sentinel (T5's `noise_span_to_unique_sentinel`)."""
    prev = np.concatenate([[False], noise[:-1]])
    first = noise & ~prev
    span_index = np.cumsum(first) - 1
    out = np.where(first, sentinels[np.clip(span_index, 0, len(sentinels) - 1)], tokens)
    return out[~(noise & prev)]


@dataclass
class SpanCorruption:
    sentinel_ids: tuple[int, ...]  # <extra_id_0>, <extra_id_1>, … (T5 gives <extra_id_0> the largest id)
    eos_token_id: int
    pad_token_id: int
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    seed: int = 0
    task: str = field(default="lm", init=False)
    shift_labels: bool = field(default=False, init=False)

    def raw_length(self, inputs_length: int) -> int:
        """Raw tokens per block for an encoder input of `inputs_length` (what the data pipeline packs)."""
        return compute_input_and_target_lengths(inputs_length, self.noise_density, self.mean_noise_span_length)[0]

    def corrupt(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, target ids) for one block of raw tokens, both ending in EOS."""
        noise = random_spans_noise_mask(len(tokens), rng, self.noise_density, self.mean_noise_span_length)
        num_spans = int((noise & ~np.concatenate([[False], noise[:-1]])).sum())
        if num_spans > len(self.sentinel_ids):
            raise ValueError(f"a block has {num_spans} noise spans but the tokenizer has only "
                             f"{len(self.sentinel_ids)} sentinels; use shorter blocks or more extra ids")
        sentinels = np.asarray(self.sentinel_ids, dtype=np.int64)
        inputs = splice(tokens, noise, sentinels)
        # Targets: the kept runs become the sentinels. Spans alternate from a kept one, so kept run i takes
        # sentinel i and is followed by noise span i: <extra_id_0> noise0 <extra_id_1> noise1 … (as in T5).
        targets = splice(tokens, ~noise, sentinels)
        return np.append(inputs, self.eos_token_id), np.append(targets, self.eos_token_id)

    def __call__(self, blocks: Blocks, epoch=0) -> dict[str, torch.Tensor]:
        inputs, targets = [], []
        for ids, n, idx, ep in zip(blocks.input_ids, blocks.lengths, blocks.index, epochs_of(blocks, epoch)):
            x, y = self.corrupt(ids[: int(n)], example_rng(self.seed, ep, idx))
            inputs.append(x)
            targets.append(y)
        in_len = np.array([len(x) for x in inputs])
        input_ids = pad_rows(inputs, int(in_len.max()), self.pad_token_id)
        labels = pad_rows(targets, max(len(y) for y in targets), IGNORE)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": attention_mask(in_len, input_ids.shape[1]),
            "labels": torch.from_numpy(labels),
        }
