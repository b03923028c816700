"""The green-list watermark of Kirchenbauer et al. (2023), "A Watermark for Large Language Models".

Generation (their Algorithm 2, "soft red list"): before each token, a keyed hash of the previous token seeds a
random permutation of the vocabulary; its first gamma*|V| ids are the green list, and delta is added to their
logits. Detection needs only the key and the token ids: count green tokens among the T scored ones and test
the null hypothesis "written without the watermark", under which each token is green with probability gamma
(section 4):  z = (|s|_G - gamma*T) / sqrt(T * gamma * (1 - gamma)),  p = 1 - Phi(z)  (one-sided).

The first token of a text has no previous token in that text and is not scored (nor biased). By default a
(previous, token) pair is scored once however often it repeats, as Kirchenbauer et al.'s follow-up "On the
Reliability of Watermarks" (2023, section 4) recommends: repeated n-grams otherwise inflate z on
low-entropy text that carries no watermark.

`WatermarkProcessor` is a logits processor (`generate/processors.py` protocol): pass it as
`SamplingParams(extra_processors=(WatermarkProcessor(config),))`, which runs it on the raw logits (before temperature
and top-k/p, as in the paper's reference code); `detect_ids` / `detect_text` are the detector.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class WatermarkConfig:
    """The watermark's parameters; generation and detection must use the same values.

    key: the secret (anyone holding it can detect, and could forge or scrub); gamma: the green fraction of the
    vocabulary; delta: the logit bonus of green tokens; vocab_size: the model's logit width."""

    key: str
    vocab_size: int
    gamma: float = 0.25
    delta: float = 2.0

    def __post_init__(self):
        if not self.key:
            raise ValueError("the watermark needs a non-empty secret key")
        if not 0 < self.gamma < 1:
            raise ValueError("gamma must be in (0, 1)")
        if self.delta < 0:
            raise ValueError("delta must be non-negative")
        if self.vocab_size < 2:
            raise ValueError("vocab_size must be at least 2")


class GreenLists:
    """The green list after each previous token: a keyed permutation, cached (LRU) since it costs O(|V|)."""

    def __init__(self, config: WatermarkConfig, cache_size: int = 4096):
        self.config = config
        self.size = max(1, int(config.gamma * config.vocab_size))
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def seed(self, prev: int) -> int:
        """HMAC-SHA256(key, previous token id) -> a 63-bit seed: the paper's keyed hash of the context."""
        mac = hmac.new(self.config.key.encode(), int(prev).to_bytes(8, "little", signed=True), hashlib.sha256)
        return int.from_bytes(mac.digest()[:8], "little") & (2**63 - 1)

    def mask(self, prev: int) -> torch.Tensor:
        """(V,) bool: True for the green tokens after `prev`."""
        m = self._cache.get(prev)
        if m is not None:
            self._cache.move_to_end(prev)
            return m
        g = torch.Generator().manual_seed(self.seed(prev))
        perm = torch.randperm(self.config.vocab_size, generator=g)
        m = torch.zeros(self.config.vocab_size, dtype=torch.bool)
        m[perm[: self.size]] = True
        self._cache[prev] = m
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return m


class WatermarkProcessor:
    """Adds delta to the green-list logits, the green list chosen by the row's previous generated token."""

    def __init__(self, config: WatermarkConfig):
        self.config = config
        self.green = GreenLists(config)

    def __call__(self, generated: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if generated.shape[1] == 0:  # no previous token in the text: the first token is left alone
            return logits
        if logits.shape[-1] != self.config.vocab_size:
            raise ValueError(f"watermark configured for {self.config.vocab_size} logits, the model gives {logits.shape[-1]}")
        masks = torch.stack([self.green.mask(int(p)) for p in generated[:, -1].tolist()]).to(logits.device)  # (B, V)
        return logits + self.config.delta * masks.to(logits.dtype)


@dataclass
class Detection:
    z_score: float
    p_value: float
    num_tokens_scored: int
    num_green: int
    green_fraction: float
    watermarked: bool  # z_score >= threshold
    threshold: float
    green_mask: list[bool] = field(default_factory=list, repr=False)  # per scored token, in order

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("z_score", "p_value", "num_tokens_scored", "num_green",
                                           "green_fraction", "watermarked", "threshold")}
        return d


def z_score(num_green: int, T: int, gamma: float) -> float:
    """(|s|_G - gamma T) / sqrt(T gamma (1 - gamma)), Kirchenbauer et al. (2023) section 4."""
    return (num_green - gamma * T) / math.sqrt(T * gamma * (1 - gamma))


def p_value(z: float) -> float:
    """One-sided normal tail 1 - Phi(z) = erfc(z / sqrt 2) / 2."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def detect_ids(ids: list[int], config: WatermarkConfig, *, threshold: float = 4.0,
               ignore_repeated: bool = True, green: GreenLists | None = None) -> Detection:
    """Score a token sequence. Raises ValueError when nothing can be scored (fewer than 2 tokens)."""
    green = green or GreenLists(config)
    seen = set()
    flags = []
    for prev, tok in zip(ids[:-1], ids[1:]):
        if ignore_repeated:
            if (prev, tok) in seen:
                continue
            seen.add((prev, tok))
        if not 0 <= tok < config.vocab_size:
            raise ValueError(f"token id {tok} is outside the watermark's vocabulary of {config.vocab_size}")
        flags.append(bool(green.mask(prev)[tok]))
    T = len(flags)
    if T == 0:
        raise ValueError("the text is too short to test for a watermark: it needs at least 2 tokens")
    n = sum(flags)
    z = z_score(n, T, config.gamma)
    return Detection(z, p_value(z), T, n, n / T, z >= threshold, threshold, flags)


def detect_text(text: str, tokenizer, config: WatermarkConfig, **kwargs) -> Detection:
    """Re-tokenize `text` (without special tokens) and score it; what `lmforge detect` and the API call."""
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:  # tokenizers without that option
        ids = tokenizer.encode(text)
    return detect_ids(ids, config, **kwargs)


def edit_tokens(ids: list[int], fraction: float, vocab_size: int, seed: int = 0) -> list[int]:
    """Replace a random `fraction` of the tokens by random ids: the paper's substitution attack (section 7),
    used to measure how detection degrades."""
    rng = random.Random(seed)
    out = list(ids)
    for i in rng.sample(range(len(out)), round(fraction * len(out))):
        out[i] = rng.randrange(vocab_size)
    return out
