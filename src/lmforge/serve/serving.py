"""What the OpenAI routes do once a request is parsed: turn it into a job for the generation service
(service.py, which owns admission, policy, engine, metering and audit) and shape what comes back as OpenAI's
JSON body or server-sent events. Embeddings are metered here (no text is generated)."""
from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import numpy as np
import torch
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from ..chat_template import ChatTemplateError
from ..generate import BEAM_FAMILIES, SamplingParams, TokenLogprob
from ..store import Database
from . import accounting, protocol as p
from .accounting import PriceTable
from .served import ServedModel
from .errors import APIError, model_not_found
from .metrics import Metrics
from .service import Caller, Completed, Delta, Generation, Job
from .settings import Settings

if TYPE_CHECKING:
    from .service import GenerationService


@dataclass
class AppState:
    settings: Settings
    db: Database
    prices: PriceTable
    metrics: Metrics
    models: dict[str, ServedModel]
    service: "GenerationService | None" = None
    degraded: dict[str, str] | None = None  # component -> why, reported by /health

    def model(self, name: str, kind: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise model_not_found(name)
        if served.kind != kind:
            what = "an embedding model: use /v1/embeddings" if served.kind == "embed" else \
                "a text-generation model: use /v1/completions or /v1/chat/completions"
            raise APIError(400, f"The model '{name}' is {what}.", param="model", code="wrong_model_kind")
        return served


# --------------------------------------------------------------------------------------------- helpers


def _sampling(req: p.SamplingFields, served: ServedModel, prompt_len: int, prompt_param: str,
              max_tokens: int | None, logprobs: int | None, extra_stop: list[str] = ()) -> SamplingParams:
    return req.to_sampling_params(
        prompt_len=prompt_len, prompt_param=prompt_param, context=served.context_length,
        vocab=served.model.config.vocab_size, max_tokens=max_tokens, logprobs=logprobs,
        beams=served.model.family in BEAM_FAMILIES, model=served.name, extra_stop=extra_stop)


def _prompt_ids(prompt, tokenizer, vocab: int) -> list[tuple[str, list[int]]]:
    """OpenAI's four prompt forms -> [(text, token ids)]."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "Invalid value for 'prompt': it must not be empty.", param="prompt", code="invalid_value")
    if isinstance(prompt[0], int):
        prompt = [prompt]
    out = []
    for item in prompt:
        if isinstance(item, str):
            ids = tokenizer.encode(item)
            text = item
        else:
            if any(not 0 <= t < vocab for t in item):
                raise APIError(400, f"Invalid value for 'prompt': token ids must be between 0 and {vocab - 1}.",
                               param="prompt", code="invalid_value")
            ids, text = list(item), tokenizer.decode(item)
        if not ids:
            raise APIError(400, "Invalid value for 'prompt': it must contain at least one token.", param="prompt",
                           code="invalid_value")
        out.append((text, ids))
    return out


AUDITED = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop",
           "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "echo", "stream")


def _audited(req) -> dict:
    return {k: v for k, v in req.model_dump(include=set(AUDITED)).items() if v is not None}


def _token(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _completion_logprobs(tokenizer, entries: list[TokenLogprob], offset: int) -> p.CompletionLogprobs:
    out = p.CompletionLogprobs()
    for e in entries:
        text = _token(tokenizer, e.token_id)
        out.tokens.append(text)
        out.token_logprobs.append(e.logprob)
        out.top_logprobs.append({_token(tokenizer, t): lp for t, lp in e.top.items()})
        out.text_offset.append(offset)
        offset += len(text)
    return out


def _chat_logprobs(tokenizer, entries: list[TokenLogprob]) -> p.ChoiceLogprobs:
    def entry(token_id, lp):
        text = _token(tokenizer, token_id)
        return dict(token=text, logprob=lp, bytes=list(text.encode()))

    return p.ChoiceLogprobs(content=[
        p.TokenLogprobEntry(**entry(e.token_id, e.logprob), top_logprobs=[p.TopLogprob(**entry(t, lp)) for t, lp in e.top.items()])
        for e in entries])


def _sse(obj) -> str:
    data = obj.model_dump_json(exclude_none=False) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"


def _usage(gen: Generation) -> p.Usage:
    return p.Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                   total_tokens=gen.prompt_tokens + gen.completion_tokens)


def _error_event(e: Exception) -> str:
    err = e if isinstance(e, APIError) else APIError(500, "The server had an error while generating.", type="server_error")
    return f"data: {json.dumps(err.body())}\n\n"


class EventStream(StreamingResponse):
    """Server-sent events whose iterator is always closed when the response ends, however it ends: Starlette
    cancels a stream whose client went away, which can leave the iterator suspended (and its generation
    running, unbilled) until garbage collection."""

    def __init__(self, content, headers: dict | None = None):
        super().__init__(content, media_type="text/event-stream", headers=headers)

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


async def _unless_disconnected(request: Request | None, work):
    """Await `work` (a non-streamed generation), cancelling it when the client disconnects, so a request
    nobody waits for stops at the next step (and is billed for what it made)."""
    if request is None:
        return await work
    task = asyncio.ensure_future(work)

    async def watch():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not watcher.done() or watcher.cancelled():
            raise  # we are being cancelled ourselves
        # nobody is listening; answer something short rather than let the cancellation escape as a traceback
        return APIError(499, "The client closed the request.", code="client_closed_request").response()
    finally:
        watcher.cancel()


async def _primed(request: Request | None, gen: Generation):
    """(the first step of deltas, the rest, None), or (.., .., a response) when the client left first. Waiting
    for the first step before answering means a request refused or failed before its first token (a full
    queue, a deadline) gets a real HTTP status, not a 200 stream that ends in an error event."""
    steps = gen.deltas()

    async def first():
        try:
            return [await steps.__anext__()]
        except StopAsyncIteration:
            return []

    got = await _unless_disconnected(request, first())
    if not isinstance(got, list):
        await steps.aclose()
        return [], steps, got
    return got, steps, None


async def _chain(first: list, rest):
    for step in first:
        yield step
    async for step in rest:
        yield step


def _json(body, gen: Generation):
    """A pydantic response body with the generation's headers (rate limits, moderation)."""
    return JSONResponse(body.model_dump(mode="json"), headers=gen.headers)


# ----------------------------------------------------------------------------------------- completions


async def completions(state: AppState, caller: Caller, req: p.CompletionRequest, request: Request | None = None):
    served = state.model(req.model, "generate")
    if req.suffix:
        raise APIError(400, "Invalid value for 'suffix': suffixes (insertion) are not supported.", param="suffix",
                       code="unsupported_parameter")
    if req.best_of not in (None, req.n):
        raise APIError(400, "Invalid value for 'best_of': only best_of equal to n is supported.", param="best_of",
                       code="unsupported_parameter")
    if req.check_copying and req.stream:
        raise APIError(400, "check_copying reports on whole completions, so it cannot be combined with stream.",
                       param="check_copying")
    prompts = _prompt_ids(req.prompt, served.tokenizer, served.model.config.vocab_size)
    job = Job(served, "completions",
              [(ids, _sampling(req, served, len(ids), "prompt", req.max_tokens, req.logprobs)) for _, ids in prompts],
              texts=[text for text, _ in prompts], params=_audited(req), watermark=req.watermark,
              check_copying=req.check_copying, param="prompt", echo=[text for text, _ in prompts] if req.echo else None)
    gen = await state.service.start(caller, job)
    rid, created, tok = p.new_id("cmpl"), p.now(), served.tokenizer
    texts = [text for text, _ in prompts]

    def echo(index: int) -> str:
        return texts[index // req.n] if req.echo else ""

    def choice(c: Completed | Delta, text: str, offset: int) -> p.CompletionChoice:
        lp = _completion_logprobs(tok, c.logprobs, offset) if req.logprobs is not None and c.logprobs is not None \
            else None
        return p.CompletionChoice(text=text, index=c.index, logprobs=lp, finish_reason=c.finish_reason)

    if req.stream:
        first, rest, gone = await _primed(request, gen)
        if gone is not None:
            return gone

        async def events():
            try:
                offsets = {}
                if req.echo and not gen.holds:  # a held stream sends each choice whole, echo included
                    for i in range(len(texts) * req.n):
                        offsets[i] = len(echo(i))
                        yield _sse(p.CompletionResponse(id=rid, created=created, model=served.name, choices=[
                            p.CompletionChoice(text=echo(i), index=i)]))
                async for step in _chain(first, rest):
                    choices = []
                    for d in step:
                        if gen.holds and req.echo:
                            offsets[d.index] = len(echo(d.index))
                        choices.append(choice(d, d.text, offsets.get(d.index, 0)))
                        if choices[-1].logprobs:
                            offsets[d.index] = offsets.get(d.index, 0) + sum(len(t) for t in choices[-1].logprobs.tokens)
                    yield _sse(p.CompletionResponse(id=rid, created=created, model=served.name, choices=choices))
                if req.stream_options and req.stream_options.include_usage:
                    yield _sse(p.CompletionResponse(id=rid, created=created, model=served.name, choices=[],
                                                    usage=_usage(gen)))
                yield "data: [DONE]\n\n"
            except Exception as e:  # noqa: BLE001 - the stream has started: the error goes in it
                yield _error_event(e)
            finally:
                await rest.aclose()  # a client gone mid-stream: stop its generation now

        return EventStream(events(), headers=gen.headers)

    results = await _unless_disconnected(request, gen.collect())
    if not isinstance(results, list):
        return results  # the client went away
    choices = []
    for c in results:  # their text includes the echoed prompt
        ch = choice(c, c.text, len(echo(c.index)))
        ch.copying = c.copying
        choices.append(ch)
    return _json(p.CompletionResponse(id=rid, created=created, model=served.name, choices=choices, usage=_usage(gen)),
                 gen)


# ------------------------------------------------------------------------------------ chat completions


async def chat_completions(state: AppState, caller: Caller, req: p.ChatCompletionRequest,
                           request: Request | None = None):
    served = state.model(req.model, "generate")
    if req.tools:
        raise APIError(400, "Invalid value for 'tools': tool calling is not supported.", param="tools",
                       code="unsupported_parameter")
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "Invalid value for 'top_logprobs': it needs 'logprobs' set to true.",
                       param="top_logprobs", code="invalid_value")
    if req.check_copying and req.stream:
        raise APIError(400, "check_copying reports on whole completions, so it cannot be combined with stream.",
                       param="check_copying")
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    template = served.chat_template
    try:
        prompt = template.render(messages)
    except ChatTemplateError as e:  # the template refused these messages (e.g. roles that do not alternate)
        raise APIError(400, f"{str(e)[0].upper()}{str(e)[1:]}.", param="messages", code="invalid_messages") from None
    ids = served.tokenizer.encode(prompt)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = _sampling(req, served, len(ids), "messages", req.max_completion_tokens or req.max_tokens, logprobs,
                       template.stop)
    job = Job(served, "chat.completions", [(ids, params)],
              texts=[m.text() for m in req.messages if m.role != "assistant"], params=_audited(req),
              watermark=req.watermark, check_copying=req.check_copying, param="messages")
    gen = await state.service.start(caller, job)
    rid, created, tok = p.new_id("chatcmpl"), p.now(), served.tokenizer

    if req.stream:
        first, rest, gone = await _primed(request, gen)
        if gone is not None:
            return gone

        def chunk(choices, usage=None):
            return _sse(p.ChatCompletionChunk(id=rid, created=created, model=served.name, choices=choices, usage=usage))

        async def events():
            try:
                yield chunk([p.ChatChunkChoice(index=j, delta=p.Delta(role="assistant", content="")) for j in range(req.n)])
                async for step in _chain(first, rest):
                    yield chunk([p.ChatChunkChoice(
                        index=d.index, delta=p.Delta(content=d.text or None), finish_reason=d.finish_reason,
                        logprobs=_chat_logprobs(tok, d.logprobs) if req.logprobs and d.logprobs else None)
                        for d in step])
                if req.stream_options and req.stream_options.include_usage:
                    yield chunk([], _usage(gen))
                yield "data: [DONE]\n\n"
            except Exception as e:  # noqa: BLE001 - the stream has started: the error goes in it
                yield _error_event(e)
            finally:
                await rest.aclose()  # a client gone mid-stream: stop its generation now

        return EventStream(events(), headers=gen.headers)

    results = await _unless_disconnected(request, gen.collect())
    if not isinstance(results, list):
        return results
    choices = [p.ChatChoice(index=c.index, message=p.ResponseMessage(content=c.text), finish_reason=c.finish_reason,
                            logprobs=_chat_logprobs(tok, c.logprobs) if req.logprobs and c.logprobs is not None
                            else None, copying=c.copying)
               for c in results]
    return _json(p.ChatCompletionResponse(id=rid, created=created, model=served.name, choices=choices,
                                          usage=_usage(gen)), gen)


# ------------------------------------------------------------------------------------------ embeddings


async def embeddings(state: AppState, caller: Caller, req: p.EmbeddingRequest):
    served = state.model(req.model, "embed")
    tok = served.tokenizer
    inputs = req.input
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not inputs:
        raise APIError(400, "Invalid value for 'input': it must not be empty.", param="input", code="invalid_value")
    if len(inputs) > 2048:
        raise APIError(400, "Invalid value for 'input': at most 2048 inputs per request.", param="input",
                       code="invalid_value")
    vocab, ctx = served.model.config.vocab_size, served.context_length
    ids = []
    for item in inputs:
        row = tok.encode(item) if isinstance(item, str) else list(item)
        if isinstance(item, str) and not item:
            raise APIError(400, "Invalid value for 'input': strings must not be empty.", param="input",
                           code="invalid_value")
        if any(not 0 <= t < vocab for t in row):
            raise APIError(400, f"Invalid value for 'input': token ids must be between 0 and {vocab - 1}.",
                           param="input", code="invalid_value")
        if len(row) > ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens, but input {len(ids)} has "
                                f"{len(row)} tokens.", param="input", code="context_length_exceeded")
        ids.append(row)
    config = served.model.config
    dim = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if req.dimensions is not None and req.dimensions != dim:
        raise APIError(400, f"Invalid value for 'dimensions': {served.name} makes {dim}-dimensional vectors and "
                            "cannot shorten them.", param="dimensions", code="invalid_value")
    prompt_tokens = sum(len(r) for r in ids)
    reservation = await run_in_threadpool(accounting.reserve, state.db, caller.key, state.prices, served.name,
                                          "embeddings", prompt_tokens, 0)

    def embed() -> np.ndarray:
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        T = max(len(r) for r in ids)
        input_ids = torch.tensor([r + [pad] * (T - len(r)) for r in ids], device=served.model.device)
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in ids], device=served.model.device)
        with served.lock, torch.no_grad():
            return served.model.embed(input_ids, mask).float().cpu().numpy()

    try:
        vectors = await run_in_threadpool(embed)
    finally:
        with anyio.CancelScope(shield=True):
            state.metrics.tokens.labels(served.name, "prompt").inc(prompt_tokens)
            await run_in_threadpool(accounting.settle, state.db, state.prices, reservation, 0)
    data = [p.Embedding(index=i, embedding=base64.b64encode(v.astype("<f4").tobytes()).decode()
                        if req.encoding_format == "base64" else v.tolist()) for i, v in enumerate(vectors)]
    body = p.EmbeddingResponse(data=data, model=served.name,
                               usage=p.Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens))
    return JSONResponse(body.model_dump(mode="json"), headers=reservation.headers())


def models(state: AppState) -> p.ModelList:
    return p.ModelList(data=[model_card(m) for m in state.models.values()])


def model_card(served: ServedModel) -> p.ModelCard:
    return p.ModelCard(id=served.name, created=served.created, max_model_len=served.context_length,
                       metadata=served.card)
