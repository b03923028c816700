"""Pretraining objectives as collators: packed blocks in, the model's keyword arguments out.

    MaskedLM         BERT (static masks, optional next-sentence prediction) and RoBERTa (dynamic masks)
    CausalLM         GPT-2
    PermutationLM    XLNet (sampled factorization order, partial prediction, two-stream targets)
    SpanCorruption   T5 (noise density 0.15, mean span 3, sentinels)

Each is called as `objective(blocks, epoch) -> dict` and names the model `task` it trains; `train_kwargs`,
where an objective has it, adds keyword arguments to the model's training forward.
"""
from .base import Blocks
from .clm import CausalLM
from .mlm import MaskedLM
from .plm import PermutationLM
from .span_corruption import SpanCorruption, compute_input_and_target_lengths, random_spans_noise_mask

__all__ = ["Blocks", "CausalLM", "MaskedLM", "PermutationLM", "SpanCorruption",
           "compute_input_and_target_lengths", "random_spans_noise_mask"]
