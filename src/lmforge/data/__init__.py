"""Corpora -> token cache (memory-mapped) -> train/validation split -> packed blocks -> per-rank batches."""
from .cache import TokenCache, build_cache, open_cache
from .corpus import DataError, expand_sources, read_documents
from .packing import Contiguous, FullSentences, Packed, Sampler, SentencePairs, split_documents

__all__ = ["Contiguous", "DataError", "FullSentences", "Packed", "Sampler", "SentencePairs", "TokenCache",
           "build_cache", "expand_sources", "open_cache", "read_documents", "split_documents"]
