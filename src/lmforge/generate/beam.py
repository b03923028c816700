"""Beam search with the semantics of Hugging Face's `generate(num_beams=k, do_sample=False)`.

The batcher runs a beam request as k rows; after each step `BeamSearch.step` says which beam each row
continues (its parent, so the caches are reordered) with which token. What it keeps, as Hugging Face does:

- candidates: the 2k best (beam, token) pairs by summed log-probability; the first beam alone starts;
- a candidate among the best k that ends (end-of-sequence, or max_tokens reached) becomes a hypothesis scored
  sum / length ** length_penalty (length counts generated tokens, the end-of-sequence one included); the k
  best hypotheses are kept;
- the k best candidates that do not end continue;
- the search stops when every candidate ends (max_tokens), or, once k hypotheses exist, when early_stopping
  is True, or when the best running beam cannot beat the worst hypothesis any more: its score divided by
  the current length ** length_penalty (by max_tokens ** length_penalty for early_stopping="never" with a
  positive length_penalty) is not above it.
"""
from __future__ import annotations

import torch


class BeamSearch:
    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_tokens: int,
                 eos: int | None):
        self.k, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.max_tokens, self.eos = max_tokens, eos
        self.scores: torch.Tensor | None = None  # (k,) summed log-probabilities of the running beams
        self.hypotheses: list[tuple[float, list[int]]] = []  # (score, tokens), best first
        self.improvable = True

    def step(self, logprobs: torch.Tensor, histories: list[list[int]]) -> list[tuple[int, int]] | None:
        """logprobs (k, V) of each running beam's next token (after logits processors); histories: each beam's
        tokens so far. Returns (parent beam, token) for each row of the next step, or None when the search is
        over (then `best` has the answer)."""
        k, V = logprobs.shape
        if self.scores is None:
            self.scores = torch.full((k,), -1e9, device=logprobs.device)
            self.scores[0] = 0.0  # the beams start identical: expand only the first
        top, index = (logprobs + self.scores[:, None]).flatten().topk(2 * k)
        parents, tokens, top = (index // V).tolist(), (index % V).tolist(), top.tolist()
        length = len(histories[0]) + 1
        ends = [length >= self.max_tokens or t == self.eos for t in tokens]

        for j in range(k):
            if ends[j]:
                self.hypotheses.append((top[j] / length**self.length_penalty, histories[parents[j]] + [tokens[j]]))
        self.hypotheses = sorted(self.hypotheses, key=lambda h: -h[0])[:k]
        if all(ends):
            return None

        going = [j for j in range(2 * k) if not ends[j]][:k]
        self.scores = torch.tensor([top[j] for j in going], device=logprobs.device)
        full = len(self.hypotheses) == k
        if full:
            horizon = self.max_tokens if self.early_stopping == "never" and self.length_penalty > 0 else length
            self.improvable = self.scores[0].item() / horizon**self.length_penalty > self.hypotheses[-1][0]
        if not self.improvable or (full and self.early_stopping is True):
            return None
        return [(parents[j], tokens[j]) for j in going]

    def best(self, n: int) -> list[list[int]]:
        """The tokens of the n best hypotheses, best first."""
        return [tokens for _, tokens in self.hypotheses[:n]]
