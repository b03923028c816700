"""Decoding: logits processors, sampling settings, stop sequences, continuous batching and beam search."""
from .batch import BEAM_FAMILIES, Batcher, Choice, RequestOutput, TokenLogprob, context_length
from .processors import LogitBias, LogitsProcessor, Penalties, Pipeline, Temperature, TopK, TopP
from .sampling import SamplingParams, generate, stream
from .stop import StopMatcher

__all__ = [
    "BEAM_FAMILIES", "Batcher", "Choice", "LogitBias", "LogitsProcessor", "Penalties", "Pipeline", "RequestOutput", "SamplingParams",
    "StopMatcher", "Temperature", "TokenLogprob", "TopK", "TopP", "context_length", "generate", "stream",
]
