"""Continuous batching: many requests decode together, joining and leaving the batch between steps.

A `Batcher` keeps one row per choice (a request with n=3 is three rows, a beam search with k beams k rows)
and one batched model state (runners.py). Each `step()`:

1. prefills the requests added since the last step together, in one padded forward pass, and appends their
   rows to the batch;
2. picks one token per row with the row's own request's logits-processor pipeline and random generator
   (so settings are per request, and a seeded request samples the same tokens whatever else is running);
   a beam request instead picks its beams' continuations together (beam.py) and reorders its rows;
3. turns tokens into text deltas, holding back text that may still become a stop string;
4. drops finished rows (end of sequence, stop string, max_tokens) and runs the model once on the new
   tokens of the rows that remain, giving the logits the next step samples from.

Greedy decoding in a batch gives the same tokens as decoding alone (up to float rounding; see runners.py).

One request never harms its batch-mates: a request whose settings or processors fail, or whose row's scores
are not numbers (NaN, +inf, or every token -inf), ends alone with `RequestOutput.error` set, and its rows
leave the batch; a prompt whose prefill fails is retried alone so only it fails. (A failure of the shared
forward pass still fails the whole batch: nothing can tell whose row caused it.)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import torch

from ..models import ModelError, PreTrainedModel
from .beam import BeamSearch
from .processors import Pipeline
from .runners import RUNNERS
from .stop import IncrementalDecoder, StopMatcher

if TYPE_CHECKING:
    from .sampling import SamplingParams

BEAM_FAMILIES = ("gpt2", "t5", "llama")  # beam search is checked against transformers for these

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
    error: str | None = None  # set when this request failed alone (it is then finished)


def context_length(model: PreTrainedModel) -> int:
    """The most tokens (prompt + completion) a model can attend to; 512 for the relative-position families."""
    if model.family == "llama":  # rotary positions: the context the checkpoint was made for
        return model.config.max_position_embeddings
    return getattr(model.config, "n_positions", None) or 512


@dataclass
class _Request:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    pipeline: Pipeline
    generator: torch.Generator | None
    matcher: StopMatcher
    beams: BeamSearch | None = None
    rows: list["_Row"] = field(default_factory=list)


@dataclass
class _Row:
    request: _Request
    index: int
    decoder: IncrementalDecoder
    ids: list[int] = field(default_factory=list)  # generated so far, end-of-sequence included
    pending: str = ""  # decoded text not yet handed out (it may still turn into a stop string)
    finished: str | None = None


# ------------------------------------------------------------------------------------------ batcher


class Batcher:
    """Decodes many requests at once. Not thread-safe: one thread calls add(), abort() and step()."""

    def __init__(self, model: PreTrainedModel, tokenizer, stop_ids: Iterable[int] = ()):
        if model.family not in RUNNERS:
            raise ModelError(f"{model.family} is an encoder-only model and cannot generate text; use one of "
                             f"{', '.join(RUNNERS)}")
        if model.task != "lm":
            raise ModelError(f"generation needs a language-model head; load the model with task='lm' (it has '{model.task}')")
        self.model = model
        self.device = model.device  # looked up once: the property walks the parameters
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self.stop_ids = frozenset({self.eos, *stop_ids} - {None})  # any of them ends a row
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
        beams = None
        if params.num_beams > 1:
            if self.model.family not in BEAM_FAMILIES:
                raise ModelError(f"beam search is not supported for {self.model.family} models; it is for "
                                 f"{' and '.join(BEAM_FAMILIES)}")
            beams = BeamSearch(params.num_beams, params.length_penalty, params.early_stopping, params.max_tokens,
                               self.eos)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(self.device).manual_seed(params.seed)
        self.waiting.append(_Request(request_id, list(prompt_ids), params, params.pipeline(), generator,
                                     StopMatcher(params.stop), beams))

    def abort(self, request_id: str) -> None:
        """Forget a request (e.g. its client went away); its rows leave the batch now."""
        self.waiting = [r for r in self.waiting if r.id != request_id]
        keep = [i for i, row in enumerate(self.rows) if row.request.id != request_id]
        if len(keep) < len(self.rows):
            self._keep(keep, keep)

    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """Admit waiting requests, choose one token per row, and advance the model. Returns one output per
        request that had rows this step (a beam request: only once, when it finishes)."""
        outputs: list[RequestOutput] = self._admit()
        if not self.rows:
            return outputs
        logits = self.logits.float()
        tokens, logprobs, failed = self._choose(logits)
        source = list(range(len(self.rows)))  # the row whose model state each row continues
        for req, start, end in self._segments():
            out = None
            if req.id not in failed and req.beams is not None:
                try:
                    out = self._beam_step(req, logits[start:end], start, source)
                except Exception as e:  # noqa: BLE001 - one request's failure stays its own
                    failed[req.id] = _failure(req, e)
            if req.id in failed:
                out = self._fail(req, failed[req.id])
            elif req.beams is None:
                out = RequestOutput(req.id, [Choice("", [], None) for _ in req.rows], False)
                for i in range(start, end):
                    out.deltas[self.rows[i].index] = self._advance(self.rows[i], tokens[i], logprobs[i])
                out.finished = all(row.finished for row in req.rows)
            if out is not None:
                outputs.append(out)
        keep = [i for i, row in enumerate(self.rows) if not row.finished]
        if keep != source:
            self._keep(keep, [source[i] for i in keep])
        if self.rows:
            self.logits = self.runner.forward(torch.tensor([row.ids[-1] for row in self.rows], device=self.device))
        return outputs

    # ---------------------------------------------------------------------------------- internals

    def _admit(self) -> list[RequestOutput]:
        """Prefill all waiting requests in one forward pass (prompts padded to a common length). If that
        pass fails, each request is prefilled alone, so only the one that fails is answered with an error."""
        if not self.waiting:
            return []
        waiting, self.waiting = self.waiting, []
        try:
            self._prefill(waiting)
            return []
        except Exception:  # noqa: BLE001
            if len(waiting) == 1:
                raise
            log.warning("a joint prefill of %d requests failed; retrying them one by one", len(waiting))
        failed = []
        for req in waiting:
            try:
                self._prefill([req])
            except Exception as e:  # noqa: BLE001
                log.exception("prefill failed for request %s", req.id)
                failed.append(RequestOutput(req.id, [Choice("", [], "error") for _ in range(req.params.n)], True,
                                            _failure(req, e)))
        return failed

    def _prefill(self, requests: list[_Request]) -> None:
        repeats = [r.params.rows for r in requests]
        part, logits = self.runner.prefill([r.prompt_ids for r in requests],
                                           torch.tensor(repeats, device=self.device))
        self.runner.join(part)
        for req, k in zip(requests, repeats):
            req.rows = [_Row(req, i, IncrementalDecoder(self.tokenizer)) for i in range(k)]
            self.rows += req.rows
        self.logits = logits if self.logits is None else torch.cat([self.logits, logits])

    def _fail(self, req: _Request, reason: str) -> RequestOutput:
        """End a request alone: its rows finish (and leave the batch at this step's end)."""
        for row in req.rows:
            row.finished = "error"
        return RequestOutput(req.id, [Choice("", [], "error") for _ in range(req.params.n)], True, reason)

    def _keep(self, keep: list[int], source: list[int]) -> None:
        """Keep the rows `keep`; row i's model state becomes that of row source[i] (they differ for beams)."""
        index = torch.tensor(source, dtype=torch.long, device=self.device)
        self.runner.keep(index)
        self.rows = [self.rows[i] for i in keep]
        self.logits = self.logits[index] if keep else None

    def _segments(self):
        """(request, start, end) for each request's running rows, which are contiguous in the batch."""
        start = 0
        while start < len(self.rows):
            req = self.rows[start].request
            end = start
            while end < len(self.rows) and self.rows[end].request is req:
                end += 1
            yield req, start, end
            start = end

    def _choose(self, logits: torch.Tensor) -> tuple[list[int], list[TokenLogprob | None], dict[str, str]]:
        """One token per row, and {request id: why} for requests that failed. Greedy rows without processors
        take one batched argmax; the others run their request's pipeline over the request's rows (contiguous
        in the batch) and sample with its generator. Each request's scores are checked on their own."""
        tokens = logits.argmax(-1)
        failed: dict[str, str] = {}
        # (rows,): a row the model itself gave NaN or inf fails only its request (one sync, with tolist below)
        broken = (~torch.isfinite(logits).all(-1)).tolist()
        for req, start, end in self._segments():
            if any(broken[start:end]):
                failed[req.id] = "the model produced non-finite logits"
                continue
            if req.beams is None and (req.pipeline or req.params.temperature > 0):
                try:
                    tokens[start:end] = self._sample(req, start, end, logits)
                except Exception as e:  # noqa: BLE001 - a processor or the settings failed: this request only
                    failed[req.id] = _failure(req, e)
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
        return tokens.tolist(), logprobs, failed

    def _sample(self, req: _Request, start: int, end: int, logits: torch.Tensor) -> torch.Tensor:
        generated = torch.tensor([row.ids for row in self.rows[start:end]], dtype=torch.long,
                                 device=logits.device)  # (rows, t)
        scores = req.pipeline(generated, logits[start:end])
        # A usable row has no NaN, no +inf, and at least one finite score (else softmax is NaN).
        if bool((scores.isnan() | (scores == float("inf"))).any() | ~torch.isfinite(scores).any(-1).all()):
            raise FloatingPointError("the sampling settings made the scores non-finite")
        if req.params.temperature == 0:
            return scores.argmax(-1)
        return torch.multinomial(scores.softmax(-1), 1, generator=req.generator).squeeze(1)

    def _beam_step(self, req: _Request, logits: torch.Tensor, start: int, source: list[int]) -> RequestOutput | None:
        """One beam-search step for a request whose rows are self.rows[start:]: continue each row as the beam
        the search chose (recording which row's model state it takes over in `source`), or, when the search
        is over, finish every row and return the n best hypotheses."""
        rows = req.rows
        logprobs = logits.log_softmax(-1)  # processors act on log-probabilities here, as in transformers
        if req.pipeline:
            logprobs = req.pipeline(torch.tensor([row.ids for row in rows], dtype=torch.long,
                                                 device=logits.device), logprobs)
        if bool(logprobs.isnan().any()):
            raise FloatingPointError("the beam scores are not numbers")
        chosen = req.beams.step(logprobs, [row.ids for row in rows])
        if chosen is not None:
            histories = [rows[parent].ids + [token] for parent, token in chosen]
            for i, (row, ids, (parent, _)) in enumerate(zip(rows, histories, chosen)):
                row.ids = ids
                source[start + i] = start + parent
            return None
        deltas = []
        for ids in req.beams.best(req.params.n):
            text = self.tokenizer.decode(ids[:-1] if ids[-1] == self.eos else ids)
            cut = req.matcher.find(text)
            reason = "stop" if ids[-1] == self.eos or cut is not None else "length"
            deltas.append(Choice(text if cut is None else text[:cut], ids, reason))
        for row in rows:
            row.finished = "stop"
        return RequestOutput(req.id, deltas, True)

    def _advance(self, row: _Row, token: int, logprob: TokenLogprob | None) -> Choice:
        """Append a token to a row; return the text that can be shown now and the finish reason, if any.

        Costs O(new text + longest stop string) per token: the decoder decodes a window of recent tokens, and a
        stop string can only start in the text not yet shown (see StopMatcher.safe_prefix)."""
        req = row.request
        row.ids.append(token)
        if token in self.stop_ids:
            row.finished = "stop"
        else:
            row.pending += row.decoder.push(token)
            if len(row.ids) >= req.params.max_tokens:
                row.finished = "length"
        if row.finished:
            row.pending += row.decoder.flush()
        cut = req.matcher.find(row.pending)
        if cut is not None:
            row.pending, row.finished = row.pending[:cut], "stop"
        delta = row.pending if row.finished else req.matcher.safe_prefix(row.pending)
        row.pending = row.pending[len(delta):]
        return Choice(delta, [token], row.finished, [logprob] if logprob else None)


def _failure(req: _Request, e: Exception) -> str:
    """The one-line reason a request failed alone (logged with the traceback; the client gets only this)."""
    log.warning("request %s failed alone: %s: %s", req.id, type(e).__name__, e)
    return f"generation failed for this request ({type(e).__name__})"
