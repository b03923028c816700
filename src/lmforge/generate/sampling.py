"""Text generation for the generative families: greedy or sampled decoding with KV caches.

GPT-2 decodes left to right with its KV cache; T5 encodes once and decodes with its decoder cache;
XLNet predicts an appended placeholder through the query stream (the trick of the XLNet paper's
generation demo), recomputing the context each step. BERT and RoBERTa do not generate text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..models import ModelError, PreTrainedModel
from .processors import LogitBias, Penalties, Pipeline, Temperature, TopK, TopP
from .stop import StopMatcher


@dataclass
class SamplingParams:
    """The OpenAI sampling settings. temperature 0 means greedy."""

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
            ("stop", len(self.stop) <= 4, "takes at most 4 sequences"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"{name} {why}")

    def pipeline(self) -> Pipeline:
        steps = Pipeline()
        if self.presence_penalty or self.frequency_penalty:
            steps.append(Penalties(self.presence_penalty, self.frequency_penalty))
        if self.logit_bias:
            steps.append(LogitBias(self.logit_bias))
        if self.temperature > 0:
            steps.append(Temperature(self.temperature))
            if self.top_k:
                steps.append(TopK(self.top_k))
            if self.top_p < 1:
                steps.append(TopP(self.top_p))
        return steps


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: dict[int, float]  # alternatives: token id -> log probability


@dataclass
class Choice:
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", or None while streaming
    logprobs: list[TokenLogprob] | None = None


class _Stepper:
    """Feeds one new token per row and returns next-token logits (B, V), hiding each family's cache."""

    def __init__(self, model: PreTrainedModel, prompt_ids: torch.Tensor):
        self.model = model
        self.family = model.family
        if self.family in ("bert", "roberta"):
            raise ModelError(f"{self.family} is an encoder-only model and cannot generate text; use gpt2, xlnet or t5")
        if model.task != "lm":
            raise ModelError(f"generation needs a language-model head; load the model with task='lm' (it has '{model.task}')")
        self.ids = prompt_ids  # (B, T) everything the model has seen (causal) or the encoder input (t5)
        self.cache = None
        if self.family == "t5":
            mask = torch.ones_like(prompt_ids)
            self.encoder_mask = mask
            self.encoded = model.encode(prompt_ids, mask)
            start = model.config.decoder_start_token_id
            self.decoder_ids = torch.full((prompt_ids.shape[0], 1), start, dtype=torch.long)

    def first(self) -> torch.Tensor:
        if self.family == "gpt2":
            out = self.model(self.ids, use_cache=True)
            self.cache = out.past_key_values
            return out.logits[:, -1]
        return self._recompute()

    def next(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B,) the tokens just chosen."""
        if self.family == "gpt2":
            self.ids = torch.cat([self.ids, tokens[:, None]], 1)
            out = self.model(tokens[:, None], past_key_values=self.cache, use_cache=True)
            self.cache = out.past_key_values
            return out.logits[:, -1]
        if self.family == "t5":
            self.decoder_ids = torch.cat([self.decoder_ids, tokens[:, None]], 1)
            out = self.model(
                None, self.encoder_mask, decoder_input_ids=tokens[:, None], encoder_outputs=self.encoded,
                past_key_values=self.cache, use_cache=True,
            )
            self.cache = out.past_key_values
            return out.logits[:, -1]
        self.ids = torch.cat([self.ids, tokens[:, None]], 1)
        return self._recompute()

    def _recompute(self) -> torch.Tensor:
        if self.family == "t5":
            out = self.model(
                None, self.encoder_mask, decoder_input_ids=self.decoder_ids, encoder_outputs=self.encoded, use_cache=True
            )
            self.cache = out.past_key_values
            return out.logits[:, -1]
        # XLNet: append a placeholder that nothing may see, and predict it through the query stream.
        B, T = self.ids.shape
        ids = torch.cat([self.ids, torch.zeros(B, 1, dtype=torch.long)], 1)
        perm_mask = torch.zeros(B, T + 1, T + 1)
        perm_mask[:, :, -1] = 1.0
        target_mapping = torch.zeros(B, 1, T + 1)
        target_mapping[:, 0, -1] = 1.0
        return self.model(ids, perm_mask=perm_mask, target_mapping=target_mapping).logits[:, 0]


@torch.no_grad()
def stream(model: PreTrainedModel, tokenizer, prompt: str, params: SamplingParams) -> Iterator[list[Choice]]:
    """Yields, after every decoding step, one Choice per completion holding only what is new: the text that
    can be shown (held back while it may still turn into a stop string), the token chosen this step (the
    end-of-sequence token included, so usage counts every generated token) and, once, the finish reason.
    Text never contains the stop string or the end-of-sequence token."""
    prompt_ids = torch.tensor([tokenizer.encode(prompt)] * params.n)
    if prompt_ids.shape[1] == 0:
        raise ValueError("prompt must contain at least one token")
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    stepper = _Stepper(model, prompt_ids)
    processors = params.pipeline()
    matcher = StopMatcher(params.stop)
    eos = tokenizer.eos_token_id
    B = params.n
    generated = torch.empty(B, 0, dtype=torch.long)
    finished: list[str | None] = [None] * B
    sent = [""] * B  # text already yielded per choice
    logits = stepper.first()
    for step in range(params.max_tokens):
        logits = logits.float()
        scores = processors(generated, logits)
        if params.temperature == 0:
            tokens = scores.argmax(-1)
        else:
            tokens = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
        logprobs = _logprobs(logits, tokens, params.logprobs) if params.logprobs is not None else None
        generated = torch.cat([generated, tokens[:, None]], 1)
        deltas = []
        for b in range(B):
            if finished[b]:
                deltas.append(Choice("", [], None))
                continue
            ids = generated[b].tolist()
            if ids[-1] == eos:
                finished[b], ids = "stop", ids[:-1]
            text = tokenizer.decode(ids)
            cut = matcher.find(text)
            if cut is not None:
                text, finished[b] = text[:cut], "stop"
            elif step == params.max_tokens - 1 and not finished[b]:
                finished[b] = "length"
            visible = text if finished[b] else matcher.safe_prefix(text)
            delta = visible[len(sent[b]):]
            sent[b] += delta
            deltas.append(Choice(delta, [int(tokens[b])], finished[b], [logprobs[b]] if logprobs else None))
        yield deltas
        if all(finished):
            return
        logits = stepper.next(tokens)


def _logprobs(logits: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """Log probabilities under the model's own distribution (before sampling settings), as OpenAI reports them."""
    lp = logits.log_softmax(-1)
    chosen = lp.gather(-1, tokens[:, None]).squeeze(1)
    best = lp.topk(top, dim=-1) if top else None
    return [
        TokenLogprob(int(tokens[b]), float(chosen[b]),
                     dict(zip(best.indices[b].tolist(), best.values[b].tolist())) if best is not None else {})
        for b in range(len(tokens))
    ]


def generate(model: PreTrainedModel, tokenizer, prompt: str, params: SamplingParams | None = None) -> list[Choice]:
    """All `params.n` completions of `prompt`, each with its text, tokens, finish reason and logprobs."""
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
