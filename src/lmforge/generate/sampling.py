"""Sampling settings and text generation for one prompt (`generate`, `stream`); the loop itself is the
continuous batcher in batch.py, shared with the server."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from ..models import PreTrainedModel
from .batch import Batcher, Choice
from .processors import LogitBias, Penalties, Pipeline, Temperature, TopK, TopP

# Numerical floors, as vLLM's SamplingParams has them: a temperature this small divides logits into
# overflow (1e-38 makes inf, then NaN after softmax), and means greedy anyway; a top_p this small keeps only
# the most likely token, which the floor still does, without comparing against a float32 denormal.
TEMPERATURE_FLOOR = 1e-5
TOP_P_FLOOR = 1e-6


class SamplingError(ValueError):
    """A setting out of range or in conflict with another; `param` names it (as data, for the API's 400)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param} {message}")
        self.param = param


@dataclass
class SamplingParams:
    """The OpenAI sampling settings. temperature 0 means greedy (as does any temperature below
    TEMPERATURE_FLOOR); top_p below TOP_P_FLOOR is raised to it."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None
    logprobs: int | None = None  # how many top alternatives to report per token; None: no logprobs
    # Beam search (an lmforge extension): deterministic, temperature does not apply; n best beams are returned.
    num_beams: int = 1
    length_penalty: float = 1.0  # hypothesis score = summed log-probability / length ** length_penalty
    early_stopping: bool | str = False  # True, False or "never", as in transformers
    extra_processors: tuple = ()  # more logits processors (e.g. a watermark), run on the raw logits

    def __post_init__(self):
        checks = [
            ("max_tokens", self.max_tokens >= 1, "must be at least 1"),
            ("temperature", 0 <= self.temperature <= 2, "must be between 0 and 2"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be 0 (off) or positive"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "must be between -2 and 2"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "must be between -2 and 2"),
            ("n", 1 <= self.n <= 128, "must be between 1 and 128"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "must be between 0 and 20"),
            ("logit_bias", all(-100 <= v <= 100 for v in self.logit_bias.values()), "values must be in [-100, 100]"),
            ("stop", len(self.stop) <= 8, "takes at most 8 sequences (4 from the request, 4 from a chat template)"),
            ("num_beams", 1 <= self.num_beams <= 16, "must be between 1 and 16"),
            ("length_penalty", -10 <= self.length_penalty <= 10, "must be between -10 and 10"),
            ("early_stopping", self.early_stopping in (True, False, "never"), "must be true, false or 'never'"),
        ]
        if self.num_beams > 1:
            checks += [
                ("n", self.n <= self.num_beams, "must not exceed num_beams (the n best beams are returned)"),
                ("logprobs", self.logprobs is None, "is not available with beam search"),
                ("top_p", self.top_p == 1, "does not apply to beam search, which is deterministic"),
                ("top_k", self.top_k == 0, "does not apply to beam search, which is deterministic"),
            ]
        for name, ok, why in checks:
            if not ok:
                raise SamplingError(name, why)
        if self.temperature < TEMPERATURE_FLOOR:
            self.temperature = 0.0
        self.top_p = max(self.top_p, TOP_P_FLOOR)

    @property
    def rows(self) -> int:
        """Batch rows the request occupies: one per choice, or one per beam."""
        return max(self.n, self.num_beams)

    def pipeline(self) -> Pipeline:
        steps = Pipeline()
        if self.presence_penalty or self.frequency_penalty:
            steps.append(Penalties(self.presence_penalty, self.frequency_penalty))
        if self.logit_bias:
            steps.append(LogitBias(self.logit_bias))
        steps.extend(self.extra_processors)  # before temperature and truncation, which would blunt them
        if self.temperature > 0 and self.num_beams == 1:
            steps.append(Temperature(self.temperature))
            if self.top_k:
                steps.append(TopK(self.top_k))
            if self.top_p < 1:
                steps.append(TopP(self.top_p))
        return steps


@torch.no_grad()
def stream(model: PreTrainedModel, tokenizer, prompt: str, params: SamplingParams,
           stop_ids: Iterable[int] = ()) -> Iterator[list[Choice]]:
    """Yields, after every decoding step, one Choice per completion holding only what is new: the text that
    can be shown (held back while it may still turn into a stop string), the token chosen this step (the
    end-of-sequence token included, so usage counts every generated token) and, once, the finish reason.
    Text never contains the stop string or the end-of-sequence token. (One request through the same
    `Batcher` the server uses; `stop_ids` end a completion besides the end-of-sequence token.)"""
    batcher = Batcher(model, tokenizer, stop_ids)
    batcher.add("0", tokenizer.encode(prompt), params)
    while batcher.has_work:
        for out in batcher.step():
            yield out.deltas


def generate(model: PreTrainedModel, tokenizer, prompt: str, params: SamplingParams | None = None) -> list[Choice]:
    """All `params.n` completions of `prompt`, each with its text, tokens, finish reason and logprobs (with
    `num_beams` > 1: the n best beams, best first)."""
    params = params or SamplingParams()
    choices = [Choice("", [], None, [] if params.logprobs is not None else None) for _ in range(params.n)]
    for deltas in stream(model, tokenizer, prompt, params):
        for c, d in zip(choices, deltas):
            c.text += d.text
            c.token_ids += d.token_ids
            c.finish_reason = d.finish_reason or c.finish_reason
            if d.logprobs:
                c.logprobs.extend(d.logprobs)
    return choices
