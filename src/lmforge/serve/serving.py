"""What the OpenAI routes do once a request is parsed: check it against the model, count it against the
key's limits, run it on the engine, and shape the answer (a JSON body or server-sent events)."""
from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import AsyncIterator

import numpy as np
import torch
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..generate import BEAM_FAMILIES, Choice, SamplingParams, TokenLogprob
from ..store import ApiKey, Database
from . import accounting, protocol as p
from .accounting import PriceTable
from .engine import ChatTemplates, ServedModel
from .errors import APIError, model_not_found
from .metrics import Metrics
from .settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    prices: PriceTable
    metrics: Metrics
    templates: ChatTemplates
    models: dict[str, ServedModel]

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
              max_tokens: int | None, logprobs: int | None, extra_stop: list[str] = (),
              processors: tuple = ()) -> SamplingParams:
    return req.to_sampling_params(
        prompt_len=prompt_len, prompt_param=prompt_param, context=served.context_length,
        vocab=served.model.config.vocab_size, max_tokens=max_tokens, logprobs=logprobs,
        beams=served.model.family in BEAM_FAMILIES, model=served.name, extra_stop=extra_stop, processors=processors)


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


async def _collect(served: ServedModel, ids: list[int], params: SamplingParams) -> list[Choice]:
    choices = [Choice("", [], None, [] if params.logprobs is not None else None) for _ in range(params.n)]
    async for out in served.engine.generate(ids, params):
        for c, d in zip(choices, out.deltas):
            c.text += d.text
            c.token_ids += d.token_ids
            c.finish_reason = d.finish_reason or c.finish_reason
            if d.logprobs:
                c.logprobs.extend(d.logprobs)
    return choices


async def _merge(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Interleave several async iterators as items arrive: (which, item)."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(i, stream):
        try:
            async for item in stream:
                await queue.put((i, item))
            await queue.put((i, end))
        except Exception as e:
            await queue.put((i, e))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item = await queue.get()
            if item is end:
                left -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()


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


class _Accounting:
    """Counts a request's tokens while it runs and records them (usage, cost, metrics) exactly once."""

    def __init__(self, state: AppState, key: ApiKey, model: str, endpoint: str, prompt_tokens: int):
        self.state, self.key, self.model, self.endpoint = state, key, model, endpoint
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0
        self.start = time.perf_counter()
        self.first_token_at: float | None = None
        self.done = False

    def tokens(self, n: int) -> None:
        if n and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.state.metrics.ttft.labels(self.model).observe(self.first_token_at - self.start)
        self.completion_tokens += n

    async def finish(self) -> None:
        if self.done:
            return
        self.done = True
        m = self.state.metrics
        m.tokens.labels(self.model, "prompt").inc(self.prompt_tokens)
        m.tokens.labels(self.model, "completion").inc(self.completion_tokens)
        await run_in_threadpool(accounting.record, self.state.db, self.state.prices, self.key.id, self.model,
                                self.endpoint, self.prompt_tokens, self.completion_tokens)


async def _admit(state: AppState, key: ApiKey, prompt_tokens: int) -> None:
    await run_in_threadpool(accounting.admit, state.db, key, prompt_tokens)


def _usage(acct: _Accounting) -> p.Usage:
    return p.Usage(prompt_tokens=acct.prompt_tokens, completion_tokens=acct.completion_tokens,
                   total_tokens=acct.prompt_tokens + acct.completion_tokens)


def _error_event(e: Exception) -> str:
    err = e if isinstance(e, APIError) else APIError(500, "The server had an error while generating.", type="server_error")
    return f"data: {json.dumps(err.body())}\n\n"


# ----------------------------------------------------------------------------------------- completions


async def completions(state: AppState, key: ApiKey, req: p.CompletionRequest, processors: tuple = ()):
    """`processors`: extra logits processors for every choice (the safety layer's watermark)."""
    served = state.model(req.model, "generate")
    if req.suffix:
        raise APIError(400, "Invalid value for 'suffix': suffixes (insertion) are not supported.", param="suffix",
                       code="unsupported_parameter")
    if req.best_of not in (None, req.n):
        raise APIError(400, "Invalid value for 'best_of': only best_of equal to n is supported.", param="best_of",
                       code="unsupported_parameter")
    prompts = _prompt_ids(req.prompt, served.tokenizer, served.model.config.vocab_size)
    params = [_sampling(req, served, len(ids), "prompt", req.max_tokens, req.logprobs, processors=processors)
              for _, ids in prompts]
    prompt_tokens = sum(len(ids) for _, ids in prompts)
    await _admit(state, key, prompt_tokens)
    acct = _Accounting(state, key, served.name, "completions", prompt_tokens)
    rid, created = p.new_id("cmpl"), p.now()
    tok = served.tokenizer

    if req.stream:
        async def events():
            try:
                streams = [served.engine.generate(ids, sp) for (_, ids), sp in zip(prompts, params)]
                offsets = [[len(text) if req.echo else 0] * req.n for text, _ in prompts]
                if req.echo:
                    for i, (text, _) in enumerate(prompts):
                        for j in range(req.n):
                            yield _sse(p.CompletionResponse(id=rid, created=created, model=served.name, choices=[
                                p.CompletionChoice(text=text, index=i * req.n + j)]))
                async for i, out in _merge(streams):
                    choices = []
                    for j, d in enumerate(out.deltas):
                        acct.tokens(len(d.token_ids))
                        if not (d.text or d.finish_reason or (d.logprobs and req.logprobs is not None)):
                            continue
                        lp = None
                        if req.logprobs is not None and d.logprobs:
                            lp = _completion_logprobs(tok, d.logprobs, offsets[i][j])
                            offsets[i][j] += sum(len(t) for t in lp.tokens)
                        choices.append(p.CompletionChoice(text=d.text, index=i * req.n + j, logprobs=lp,
                                                          finish_reason=d.finish_reason))
                    if choices:
                        yield _sse(p.CompletionResponse(id=rid, created=created, model=served.name, choices=choices))
                await acct.finish()  # before [DONE], so a client that reads its usage next finds it
                if req.stream_options and req.stream_options.include_usage:
                    yield _sse(p.CompletionResponse(id=rid, created=created, model=served.name, choices=[],
                                                    usage=_usage(acct)))
                yield "data: [DONE]\n\n"
            except Exception as e:
                yield _error_event(e)
            finally:
                await acct.finish()

        return StreamingResponse(events(), media_type="text/event-stream")

    try:
        results = await asyncio.gather(*[_collect(served, ids, sp) for (_, ids), sp in zip(prompts, params)])
        choices = []
        for i, ((text, _), result) in enumerate(zip(prompts, results)):
            for j, c in enumerate(result):
                acct.tokens(len(c.token_ids))
                lp = _completion_logprobs(tok, c.logprobs, len(text) if req.echo else 0) if c.logprobs is not None else None
                choices.append(p.CompletionChoice(text=(text if req.echo else "") + c.text, index=i * req.n + j,
                                                  logprobs=lp, finish_reason=c.finish_reason))
    finally:
        await acct.finish()
    return p.CompletionResponse(id=rid, created=created, model=served.name, choices=choices, usage=_usage(acct))


# ------------------------------------------------------------------------------------ chat completions


async def chat_completions(state: AppState, key: ApiKey, req: p.ChatCompletionRequest, processors: tuple = ()):
    served = state.model(req.model, "generate")
    if req.tools:
        raise APIError(400, "Invalid value for 'tools': tool calling is not supported.", param="tools",
                       code="unsupported_parameter")
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "Invalid value for 'top_logprobs': it needs 'logprobs' set to true.",
                       param="top_logprobs", code="invalid_value")
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    template = served.chat_template
    try:
        prompt = template.render(messages)
    except Exception as e:  # a broken template in a model folder is the server's fault, but say what it is
        raise APIError(500, f"The chat template of '{served.name}' failed: {e}", type="server_error") from None
    ids = served.tokenizer.encode(prompt)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = _sampling(req, served, len(ids), "messages", req.max_completion_tokens or req.max_tokens, logprobs,
                       template.stop, processors)
    await _admit(state, key, len(ids))
    acct = _Accounting(state, key, served.name, "chat.completions", len(ids))
    rid, created = p.new_id("chatcmpl"), p.now()
    tok = served.tokenizer

    if req.stream:
        def chunk(choices, usage=None):
            return _sse(p.ChatCompletionChunk(id=rid, created=created, model=served.name, choices=choices, usage=usage))

        async def events():
            try:
                yield chunk([p.ChatChunkChoice(index=j, delta=p.Delta(role="assistant", content="")) for j in range(req.n)])
                async for out in served.engine.generate(ids, params):
                    choices = []
                    for j, d in enumerate(out.deltas):
                        acct.tokens(len(d.token_ids))
                        if not (d.text or d.finish_reason or (d.logprobs and req.logprobs)):
                            continue
                        lp = _chat_logprobs(tok, d.logprobs) if req.logprobs and d.logprobs else None
                        choices.append(p.ChatChunkChoice(index=j, delta=p.Delta(content=d.text or None), logprobs=lp,
                                                         finish_reason=d.finish_reason))
                    if choices:
                        yield chunk(choices)
                await acct.finish()
                if req.stream_options and req.stream_options.include_usage:
                    yield chunk([], _usage(acct))
                yield "data: [DONE]\n\n"
            except Exception as e:
                yield _error_event(e)
            finally:
                await acct.finish()

        return StreamingResponse(events(), media_type="text/event-stream")

    try:
        result = await _collect(served, ids, params)
        for c in result:
            acct.tokens(len(c.token_ids))
    finally:
        await acct.finish()
    choices = [p.ChatChoice(index=j, message=p.ResponseMessage(content=c.text), finish_reason=c.finish_reason,
                            logprobs=_chat_logprobs(tok, c.logprobs) if c.logprobs is not None else None)
               for j, c in enumerate(result)]
    return p.ChatCompletionResponse(id=rid, created=created, model=served.name, choices=choices, usage=_usage(acct))


# ------------------------------------------------------------------------------------------ embeddings


async def embeddings(state: AppState, key: ApiKey, req: p.EmbeddingRequest):
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
    await _admit(state, key, prompt_tokens)
    acct = _Accounting(state, key, served.name, "embeddings", prompt_tokens)

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
        await acct.finish()
    data = [p.Embedding(index=i, embedding=base64.b64encode(v.astype("<f4").tobytes()).decode()
                        if req.encoding_format == "base64" else v.tolist()) for i, v in enumerate(vectors)]
    return p.EmbeddingResponse(data=data, model=served.name,
                               usage=p.Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens))


def models(state: AppState) -> p.ModelList:
    return p.ModelList(data=[p.ModelCard(id=m.name, created=m.created) for m in state.models.values()])
