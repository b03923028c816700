"""Continuous batching: many requests decode together, joining and leaving the batch between steps.

A `Batcher` keeps one row per choice (a request with n=3 is three rows) and one batched cache. Each
`step()`:

1. prefills the requests added since the last step, each alone (prompts differ in length), and appends
   their rows to the batch; caches are left-padded to a common length and attention masks hide the pads;
2. picks one token per row with the row's own request's logits-processor pipeline and random generator
   (so settings are per request, and a seeded request samples the same tokens whatever else is running);
3. turns tokens into text deltas, holding back text that may still become a stop string;
4. drops finished rows (end of sequence, stop string, max_tokens) and runs the model once on the new
   tokens of the rows that remain, giving the logits the next step samples from.

Padding never changes a row's result: GPT-2 gets explicit per-row position ids, T5's relative position
bias depends only on distances (unchanged by left padding), and masked keys get zero attention weight.
So greedy decoding in a batch gives the same tokens as decoding alone (up to float rounding).

GPT-2 and T5 decode with their KV caches. XLNet predicts an appended placeholder through the query
stream (the trick of the XLNet paper's generation demo), recomputing the context each step; its rows are
grouped by length so no padding is needed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..models import ModelError, PreTrainedModel
from .processors import Pipeline
from .stop import StopMatcher

if TYPE_CHECKING:
    from .sampling import SamplingParams

log = logging.getLogger(__name__)


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: dict[int, float]  # alternatives: token id -> log probability


@dataclass
class Choice:
    """One completion, or (while streaming) what is new in it since the last step."""

    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", or None while running
    logprobs: list[TokenLogprob] | None = None


@dataclass
class RequestOutput:
    """What one step produced for one request: a delta per choice (empty for choices already finished)."""

    request_id: str
    deltas: list[Choice]
    finished: bool  # all choices have finished


def context_length(model: PreTrainedModel) -> int:
    """The most tokens (prompt + completion) a model can attend to; 512 for the relative-position families."""
    return getattr(model.config, "n_positions", None) or 512


@dataclass
class _Request:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    pipeline: Pipeline
    generator: torch.Generator | None
    matcher: StopMatcher
    rows: list["_Row"] = field(default_factory=list)


@dataclass
class _Row:
    request: _Request
    index: int
    ids: list[int] = field(default_factory=list)  # generated so far, end-of-sequence included
    sent: str = ""  # text already handed out
    finished: str | None = None


# ----------------------------------------------------------------------------------- family runners
# Each runner owns the batched model state of the rows in order: prefill() one prompt into a part,
# join() parts into the batch, forward() the new tokens of every row, keep() a subset of rows.


def _pad(t: torch.Tensor, length: int, dim: int, left: bool) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + ([missing, 0] if left else [0, missing])
    return F.pad(t, pad)


class _CausalRunner:
    """GPT-2: a KV cache per layer (B, nh, P, hs), a key mask (B, P) and each row's next position."""

    def __init__(self, model):
        self.model = model
        self.cache = self.mask = self.pos = None

    def prefill(self, prompt: list[int], n: int):
        ids = torch.tensor([prompt], device=self.model.device)
        out = self.model(ids, use_cache=True)
        cache = [tuple(t.expand(n, -1, -1, -1) for t in kv) for kv in out.past_key_values]
        mask = torch.ones(n, len(prompt), dtype=torch.long, device=ids.device)
        pos = torch.full((n,), len(prompt), dtype=torch.long, device=ids.device)
        return (cache, mask, pos), out.logits[:, -1].expand(n, -1)

    def join(self, part) -> None:
        cache, mask, pos = part
        if self.cache is None:
            self.cache, self.mask, self.pos = cache, mask, pos
            return
        P = max(self.mask.shape[1], mask.shape[1])
        self.cache = [
            tuple(torch.cat([_pad(a, P, 2, True), _pad(b, P, 2, True)]) for a, b in zip(old, new))
            for old, new in zip(self.cache, cache)
        ]
        self.mask = torch.cat([_pad(self.mask, P, 1, True), _pad(mask, P, 1, True)])
        self.pos = torch.cat([self.pos, pos])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = F.pad(self.mask, (0, 1), value=1)  # (B, P + 1)
        out = self.model(tokens[:, None], self.mask, past_key_values=self.cache, use_cache=True,
                         position_ids=self.pos[:, None])
        self.cache, self.pos = out.past_key_values, self.pos + 1
        return out.logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            self.cache = self.mask = self.pos = None
            return
        self.mask, self.pos = self.mask[rows], self.pos[rows]
        first = int(self.mask.any(0).nonzero()[0])  # columns before it are padding in every row left
        self.mask = self.mask[:, first:]
        self.cache = [tuple(t[rows, :, first:] for t in kv) for kv in self.cache]


class _Seq2SeqRunner:
    """T5: per layer (self k, self v, cross k, cross v); decoder key mask (B, P); encoder mask (B, S)."""

    def __init__(self, model):
        self.model = model
        self.cache = self.mask = self.enc = self.enc_mask = None

    def prefill(self, prompt: list[int], n: int):
        ids = torch.tensor([prompt], device=self.model.device)
        enc = self.model.encode(ids)  # (1, S, d_model)
        start = torch.tensor([[self.model.config.decoder_start_token_id]], device=ids.device)
        out = self.model(None, decoder_input_ids=start, encoder_outputs=enc, use_cache=True)
        cache = [tuple(t.expand(n, -1, -1, -1) for t in layer) for layer in out.past_key_values]
        ones = lambda T: torch.ones(n, T, dtype=torch.long, device=ids.device)  # noqa: E731
        return (cache, ones(1), enc.expand(n, -1, -1), ones(len(prompt))), out.logits[:, -1].expand(n, -1)

    def join(self, part) -> None:
        cache, mask, enc, enc_mask = part
        if self.cache is None:
            self.cache, self.mask, self.enc, self.enc_mask = cache, mask, enc, enc_mask
            return
        P = max(self.mask.shape[1], mask.shape[1])
        S = max(self.enc_mask.shape[1], enc_mask.shape[1])
        self.cache = [
            (torch.cat([_pad(o[0], P, 2, True), _pad(n[0], P, 2, True)]),
             torch.cat([_pad(o[1], P, 2, True), _pad(n[1], P, 2, True)]),
             torch.cat([_pad(o[2], S, 2, False), _pad(n[2], S, 2, False)]),
             torch.cat([_pad(o[3], S, 2, False), _pad(n[3], S, 2, False)]))
            for o, n in zip(self.cache, cache)
        ]
        self.mask = torch.cat([_pad(self.mask, P, 1, True), _pad(mask, P, 1, True)])
        self.enc = torch.cat([_pad(self.enc, S, 1, False), _pad(enc, S, 1, False)])
        self.enc_mask = torch.cat([_pad(self.enc_mask, S, 1, False), _pad(enc_mask, S, 1, False)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = F.pad(self.mask, (0, 1), value=1)
        out = self.model(None, self.enc_mask, decoder_input_ids=tokens[:, None], decoder_attention_mask=self.mask,
                         encoder_outputs=self.enc, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            self.cache = self.mask = self.enc = self.enc_mask = None
            return
        self.mask, self.enc_mask, self.enc = self.mask[rows], self.enc_mask[rows], self.enc[rows]
        first = int(self.mask.any(0).nonzero()[0])
        last = int(self.enc_mask.any(0).nonzero()[-1]) + 1
        self.mask, self.enc_mask, self.enc = self.mask[:, first:], self.enc_mask[:, :last], self.enc[:, :last]
        self.cache = [(k[rows, :, first:], v[rows, :, first:], ck[rows, :, :last], cv[rows, :, :last])
                      for k, v, ck, cv in self.cache]


class _PlaceholderRunner:
    """XLNet: no cache; every step predicts a placeholder appended to each row's full context."""

    def __init__(self, model):
        self.model = model
        self.ids: list[list[int]] = []

    def _logits(self, rows: list[list[int]]) -> torch.Tensor:
        out = torch.empty(len(rows), self.model.config.vocab_size, device=self.model.device)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(rows):
            by_length.setdefault(len(ids), []).append(i)
        for T, members in by_length.items():
            ids = torch.tensor([rows[i] + [0] for i in members], device=self.model.device)  # (b, T + 1)
            B = len(members)
            perm_mask = torch.zeros(B, T + 1, T + 1, device=ids.device)
            perm_mask[:, :, -1] = 1.0  # nothing may see the placeholder
            target_mapping = torch.zeros(B, 1, T + 1, device=ids.device)
            target_mapping[:, 0, -1] = 1.0
            out[members] = self.model(ids, perm_mask=perm_mask, target_mapping=target_mapping).logits[:, 0]
        return out

    def prefill(self, prompt: list[int], n: int):
        return [list(prompt) for _ in range(n)], self._logits([prompt]).expand(n, -1)

    def join(self, part) -> None:
        self.ids += part

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for ids, t in zip(self.ids, tokens.tolist()):
            ids.append(t)
        return self._logits(self.ids)

    def keep(self, rows: torch.Tensor) -> None:
        self.ids = [self.ids[i] for i in rows.tolist()]


RUNNERS = {"gpt2": _CausalRunner, "t5": _Seq2SeqRunner, "xlnet": _PlaceholderRunner}


# ------------------------------------------------------------------------------------------ batcher


class Batcher:
    """Decodes many requests at once. Not thread-safe: one thread calls add(), abort() and step()."""

    def __init__(self, model: PreTrainedModel, tokenizer):
        if model.family not in RUNNERS:
            raise ModelError(f"{model.family} is an encoder-only model and cannot generate text; use gpt2, xlnet or t5")
        if model.task != "lm":
            raise ModelError(f"generation needs a language-model head; load the model with task='lm' (it has '{model.task}')")
        self.model = model
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.runner = RUNNERS[model.family](model)
        self.rows: list[_Row] = []  # in batch order
        self.waiting: list[_Request] = []
        self.logits: torch.Tensor | None = None  # (rows, V): next-token logits of the running rows

    @property
    def has_work(self) -> bool:
        return bool(self.rows or self.waiting)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def add(self, request_id: str, prompt_ids: list[int], params) -> None:
        """Queue a request; it joins the batch at the next step."""
        if not prompt_ids:
            raise ValueError("prompt must contain at least one token")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(self.model.device).manual_seed(params.seed)
        self.waiting.append(_Request(request_id, list(prompt_ids), params, params.pipeline(), generator,
                                     StopMatcher(params.stop)))

    def abort(self, request_id: str) -> None:
        """Forget a request (e.g. its client went away); its rows leave the batch now."""
        self.waiting = [r for r in self.waiting if r.id != request_id]
        keep = [i for i, row in enumerate(self.rows) if row.request.id != request_id]
        if len(keep) < len(self.rows):
            self._keep(keep)

    @torch.no_grad()
    def step(self) -> list[RequestOutput]:
        """Admit waiting requests, choose one token per row, and advance the model. Returns one output per
        request that had rows this step."""
        self._admit()
        if not self.rows:
            return []
        logits = self.logits.float()
        tokens, logprobs = self._choose(logits)
        outputs: dict[str, RequestOutput] = {}
        for row, token, lp in zip(self.rows, tokens, logprobs):
            req = row.request
            out = outputs.get(req.id)
            if out is None:
                out = outputs[req.id] = RequestOutput(req.id, [Choice("", [], None) for _ in req.rows], False)
            out.deltas[row.index] = self._advance(row, token, lp)
        for row in self.rows:
            outputs[row.request.id].finished = all(r.finished for r in row.request.rows)
        keep = [i for i, row in enumerate(self.rows) if not row.finished]
        if len(keep) < len(self.rows):
            self._keep(keep)
        if self.rows:
            self.logits = self.runner.forward(torch.tensor([row.ids[-1] for row in self.rows], device=self.model.device))
        return list(outputs.values())

    # ---------------------------------------------------------------------------------- internals

    def _admit(self) -> None:
        for req in self.waiting:
            n = req.params.n
            part, logits = self.runner.prefill(req.prompt_ids, n)
            self.runner.join(part)
            req.rows = [_Row(req, i) for i in range(n)]
            self.rows += req.rows
            self.logits = logits if self.logits is None else torch.cat([self.logits, logits])
        self.waiting = []

    def _keep(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long, device=self.model.device)
        self.runner.keep(index)
        self.rows = [self.rows[i] for i in keep]
        self.logits = self.logits[index] if keep else None

    def _choose(self, logits: torch.Tensor) -> tuple[list[int], list[TokenLogprob | None]]:
        """One token per row. Greedy rows without processors take one batched argmax; the others run their
        request's pipeline over the request's rows (contiguous in the batch) and sample with its generator."""
        tokens = logits.argmax(-1)
        start = 0
        while start < len(self.rows):
            req = self.rows[start].request
            end = start
            while end < len(self.rows) and self.rows[end].request is req:
                end += 1
            params = req.params
            if req.pipeline or params.temperature > 0:
                generated = torch.tensor([row.ids for row in self.rows[start:end]], dtype=torch.long,
                                         device=logits.device)  # (rows, t)
                scores = req.pipeline(generated, logits[start:end])
                if params.temperature == 0:
                    tokens[start:end] = scores.argmax(-1)
                else:
                    probs = scores.softmax(-1)
                    tokens[start:end] = torch.multinomial(probs, 1, generator=req.generator).squeeze(1)
            start = end
        logprobs: list[TokenLogprob | None] = [None] * len(self.rows)
        wanted = [i for i, row in enumerate(self.rows) if row.request.params.logprobs is not None]
        if wanted:
            # The model's own distribution (before sampling settings), as OpenAI reports it.
            index = torch.tensor(wanted, device=logits.device)
            lp = logits[index].log_softmax(-1)
            chosen = lp.gather(-1, tokens[index][:, None]).squeeze(1).tolist()
            top_n = max(self.rows[i].request.params.logprobs for i in wanted)
            best = lp.topk(top_n, dim=-1) if top_n else None
            for j, i in enumerate(wanted):
                k = self.rows[i].request.params.logprobs
                top = dict(zip(best.indices[j, :k].tolist(), best.values[j, :k].tolist())) if k else {}
                logprobs[i] = TokenLogprob(int(tokens[i]), chosen[j], top)
        return tokens.tolist(), logprobs

    def _advance(self, row: _Row, token: int, logprob: TokenLogprob | None) -> Choice:
        """Append a token to a row; return the text that can be shown now and the finish reason, if any."""
        req = row.request
        row.ids.append(token)
        ids = row.ids
        if token == self.eos:
            row.finished, ids = "stop", ids[:-1]
        text = self.tokenizer.decode(ids)
        cut = req.matcher.find(text)
        if cut is not None:
            text, row.finished = text[:cut], "stop"
        elif not row.finished and len(row.ids) >= req.params.max_tokens:
            row.finished = "length"
        visible = text if row.finished else req.matcher.safe_prefix(text)
        delta = visible[len(row.sent):] if visible.startswith(row.sent) else ""
        row.sent += delta
        return Choice(delta, [token], row.finished, [logprob] if logprob else None)
