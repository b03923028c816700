"""Sentence embeddings for bots: MiniLM (`all-MiniLM-L6-v2`, 384-d, L2-normalised) for real bots, and a
hashing embedder (character trigrams) that needs no model, for tests and tiny machines."""
from __future__ import annotations

import hashlib
import logging
import threading
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised."""


class MiniLMEmbedder:
    """`lmforge.load("all-MiniLM-L6-v2")` (or a given, e.g. fine-tuned, copy), loaded on first use; batches
    are sorted by length so padding is short."""

    name, dim = "all-MiniLM-L6-v2", 384

    def __init__(self, batch_size: int = 64, max_length: int = 128, model=None, tokenizer=None):
        self.batch_size, self.max_length = batch_size, max_length
        self._model, self._tokenizer = model, tokenizer
        self._lock = threading.Lock()

    def load_fresh(self):
        """A new copy of the packaged model and its tokenizer (to fine-tune without touching this one)."""
        import lmforge

        model, tok = lmforge.load(self.name)
        return model.eval(), tok

    def load(self):
        with self._lock:
            if self._model is None:
                self._model, self._tokenizer = self.load_fresh()
        return self._model, self._tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tok = self.load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = tok([texts[i] or " " for i in idx], padding=True, truncation=True, max_length=self.max_length)
            with torch.no_grad():
                v = model.embed(batch["input_ids"], batch["attention_mask"])
            out[idx] = v.float().numpy()
        return out


class HashingEmbedder:
    """Bag of lower-cased words and character trigrams hashed into `dim` buckets: no model, deterministic.
    Good enough to tell "what are your opening hours" from "how do I reset my password" in tests."""

    name = "hashing"

    def __init__(self, dim: int = 512):
        self.dim = dim

    def _bucket(self, feature: str) -> int:
        return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=4).digest(), "little") % self.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
            for w in words:
                out[row, self._bucket("w:" + w)] += 1.0
                padded = f"#{w}#"
                for i in range(len(padded) - 2):
                    out[row, self._bucket("c:" + padded[i:i + 3])] += 0.5
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


_SHARED: dict[str, Embedder] = {}


def get_embedder(name: str = "minilm") -> Embedder:
    """One shared instance per kind per process ("minilm" or "hashing")."""
    if name not in _SHARED:
        if name == "minilm":
            _SHARED[name] = MiniLMEmbedder()
        elif name == "hashing":
            _SHARED[name] = HashingEmbedder()
        else:
            raise ValueError(f"unknown embedder {name!r}; use 'minilm' or 'hashing'")
    return _SHARED[name]
