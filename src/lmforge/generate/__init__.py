"""Decoding: logits processors, sampling settings, stop sequences, and the generation loop."""
from .processors import LogitBias, LogitsProcessor, Penalties, Pipeline, Temperature, TopK, TopP
from .sampling import Choice, SamplingParams, TokenLogprob, generate, stream
from .stop import StopMatcher

__all__ = [
    "Choice", "LogitBias", "LogitsProcessor", "Penalties", "Pipeline", "SamplingParams", "StopMatcher",
    "Temperature", "TokenLogprob", "TopK", "TopP", "generate", "stream",
]
