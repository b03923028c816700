"""The safety layer around /v1/completions and /v1/chat/completions: the caller's key's filter policy
(safety/filters.py) screens the input, adds the watermark, filters the output, counts blocked and flagged
texts, and writes one audit record per generation (safety/audit_log.py).

Input that a policy blocks is answered 400 with code `content_policy_violation` and the policy's refusal
message, before any generation. Output that a policy blocks is emptied and its `finish_reason` set to
`content_filter`, as OpenAI does; with `redact_output` the PII in it is replaced by `[EMAIL]`, `[PHONE]`, ....
A stream whose output the policy can change (a `block` action or `redact_output`) is held back until it
is complete, since text already sent cannot be taken back; other streams flow through and are checked at
the end, for the audit record and the counts."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import AsyncIterator

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..safety.audit_log import AuditLog
from ..safety.copying import CopyIndex
from ..safety.filters import FilterPolicy, filter_output, screen, summary
from ..safety.moderation import ACTIONS, Decision
from ..safety.policies import get_policy, record_events
from ..safety.watermark import WatermarkConfig, WatermarkProcessor
from ..store import ApiKey
from . import protocol as p
from . import serving
from .errors import APIError

PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop",
          "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "echo", "stream")


def _strongest(decisions: list[Decision]) -> Decision | None:
    return min(decisions, key=lambda d: ACTIONS.index(d.action)) if decisions else None


def _can_change(policy: FilterPolicy) -> bool:
    return policy.redact_output or (policy.output is not None and "block" in policy.output.actions.values())


def audit_log(request: Request) -> AuditLog:
    """The server's audit log, opened once per app."""
    app_state = request.app.state
    log = getattr(app_state, "audit", None)
    if log is None:
        settings = app_state.lmforge.settings
        key = settings.audit_key.get_secret_value() if settings.audit_key else None
        log = app_state.audit = AuditLog(settings.audit_log, key=key, redact=settings.audit_redact)
    return log


def watermark(request: Request, served, wanted: bool) -> tuple[tuple, dict]:
    """(logits processors, audit info) for a generation; 400 when asked for but not configured here."""
    if not wanted:
        return (), {}
    settings = request.app.state.lmforge.settings
    if settings.watermark_key is None:
        raise APIError(400, "Watermarking is not configured on this server: the administrator sets "
                            "LMFORGE_WATERMARK_KEY (this key's policy or the request asked for a watermark).",
                       param="watermark", code="watermark_unavailable")
    cache = getattr(request.app.state, "watermarks", None)
    if cache is None:
        cache = request.app.state.watermarks = {}
    processor = cache.get(served.name)  # one per model: each is used only by that model's engine thread
    if processor is None:
        config = WatermarkConfig(settings.watermark_key.get_secret_value(), served.model.config.vocab_size,
                                 settings.watermark_gamma, settings.watermark_delta)
        processor = cache[served.name] = WatermarkProcessor(config)
    c = processor.config
    return (processor,), {"key_id": settings.watermark_key_id, "gamma": c.gamma, "delta": c.delta}


def copy_index(request: Request) -> CopyIndex:
    """The server's verbatim-copy index (LMFORGE_COPY_INDEX), loaded once; 400 when none is configured."""
    settings = request.app.state.lmforge.settings
    if settings.copy_index is None:
        raise APIError(400, "The copy check is not configured on this server: the administrator builds an index with "
                            "`lmforge data index` and sets LMFORGE_COPY_INDEX to its folder.",
                       param="check_copying", code="copy_check_unavailable")
    index = getattr(request.app.state, "copy_index", None)
    if index is None:
        try:
            index = request.app.state.copy_index = CopyIndex.load(settings.copy_index)
        except (OSError, ValueError) as e:
            raise APIError(500, f"The server's copy index cannot be read: {e}", param="check_copying",
                           code="copy_check_unavailable") from None
    return index


def _prompt_texts(req, served) -> list[str]:
    if isinstance(req, p.ChatCompletionRequest):
        return [m.text() for m in req.messages if m.role != "assistant"]
    prompts = [req.prompt] if isinstance(req.prompt, str) or (req.prompt and isinstance(req.prompt[0], int)) \
        else req.prompt
    vocab = served.model.config.vocab_size
    return [x if isinstance(x, str) else served.tokenizer.decode([t for t in x if 0 <= t < vocab]) for x in prompts]


@dataclass
class Turn:
    """One request passing through the guard: what the audit record and the counts need."""

    request: Request
    key: ApiKey
    req: p.CompletionRequest | p.ChatCompletionRequest
    policy: FilterPolicy
    prompts: list[str]
    input: Decision
    watermark: dict
    generated: dict[int, str] = field(default_factory=dict)  # choice index -> text as the model wrote it
    outputs: list[Decision] = field(default_factory=list)
    usage: dict = field(default_factory=dict)

    def finish(self) -> None:
        """Count and audit (blocking: call in a thread)."""
        state = self.request.app.state.lmforge
        output = _strongest(self.outputs)
        record_events(state.db, {"input": self.input, **({"output": output} if output else {})}, key_id=self.key.id)
        params = {k: v for k, v in self.req.model_dump(include=set(PARAMS)).items() if v is not None}
        audit_log(self.request).log_generation(
            model=self.req.model, key_id=self.key.prefix, params=params,
            prompt=self.prompts if len(self.prompts) != 1 else self.prompts[0],
            completion=[self.generated[i] for i in sorted(self.generated)],
            prompt_tokens=self.usage.get("prompt_tokens", 0), completion_tokens=self.usage.get("completion_tokens", 0),
            moderation={"input": summary(self.input), "output": [summary(d) for d in self.outputs]},
            watermark=self.watermark)


async def generate(request: Request, response: Response, key: ApiKey, req) -> object:
    """Run a completion or chat completion under the key's policy (the routes' one call)."""
    state: serving.AppState = request.app.state.lmforge
    served = state.model(req.model, "generate")
    policy = await run_in_threadpool(get_policy, state.db, key_id=key.id)
    prompts = _prompt_texts(req, served)
    decision = await run_in_threadpool(screen, prompts, policy.input)
    processors, wm = watermark(request, served, policy.watermark or req.watermark)
    if req.check_copying and req.stream:
        raise APIError(400, "check_copying reports on whole completions, so it cannot be combined with stream.",
                       param="check_copying")
    index = copy_index(request) if req.check_copying else None
    turn = Turn(request, key, req, policy, prompts, decision, wm)
    if decision.blocked:
        await run_in_threadpool(turn.finish)
        raise APIError(400, decision.message, param="messages" if isinstance(req, p.ChatCompletionRequest) else "prompt",
                       code="content_policy_violation")
    if decision.action == "flag":
        response.headers["x-lmforge-moderation"] = "input=flag"
    chat = isinstance(req, p.ChatCompletionRequest)
    if req.stream:
        wants_usage = bool(req.stream_options and req.stream_options.include_usage)
        req.stream_options = p.StreamOptions(include_usage=True)  # the audit record needs the token counts
        result = await (serving.chat_completions if chat else serving.completions)(state, key, req, processors)
        headers = {"x-lmforge-moderation": "input=flag"} if decision.action == "flag" else None
        return StreamingResponse(_stream(result.body_iterator, turn, chat, wants_usage),
                                 media_type="text/event-stream", headers=headers)
    result = await (serving.chat_completions if chat else serving.completions)(state, key, req, processors)
    turn.usage = result.usage.model_dump()
    filtered = []
    for c in result.choices:
        text = c.message.content if chat else c.text
        turn.generated[c.index] = text
        filtered.append(await run_in_threadpool(filter_output, text, policy))
    turn.outputs = [f.decision for f in filtered]
    for c, f in zip(result.choices, filtered):
        if f.text != (c.message.content if chat else c.text):
            c.logprobs = None  # they would spell out what was removed
            if chat:
                c.message.content = f.text
            else:
                c.text = f.text
        if f.blocked:
            c.finish_reason = "content_filter"
        if index is not None:
            threshold = state.settings.copy_threshold
            c.copying = (await run_in_threadpool(index.check, f.text, threshold)).to_dict()
    await run_in_threadpool(turn.finish)
    fired = [f"{side}={d.action}" for side, d in (("input", decision), ("output", _strongest(turn.outputs)))
             if d is not None and d.action != "allow"]
    if fired:
        response.headers["x-lmforge-moderation"] = ", ".join(fired)
    return result


def _parse(event: str) -> dict | None:
    if event.startswith("data: {"):
        return json.loads(event[len("data: "):])
    return None


async def _stream(events: AsyncIterator[str], turn: Turn, chat: bool, wants_usage: bool) -> AsyncIterator[str]:
    """Pass the stream through (or hold it back, when the policy can change the output), collecting each
    choice's text and the usage; filter, count and audit at the end."""
    hold = _can_change(turn.policy)
    held: list[str] = []
    finished = False

    def text_of(choice: dict) -> str:
        return ((choice.get("delta") or {}).get("content") if chat else choice.get("text")) or ""

    def finish() -> dict[int, object]:
        filtered = {i: filter_output(t, turn.policy) for i, t in turn.generated.items()}
        turn.outputs = [f.decision for f in filtered.values()]
        turn.finish()
        return filtered

    try:
        async for event in events:
            chunk = _parse(event)
            if chunk is not None and "choices" in chunk:
                for c in chunk["choices"]:
                    turn.generated[c["index"]] = turn.generated.get(c["index"], "") + text_of(c)
                if chunk.get("usage"):
                    turn.usage = chunk["usage"]
                    if not wants_usage:
                        continue
            if hold or event.startswith("data: [DONE]"):  # [DONE] waits for the audit record
                held.append(event)
            else:
                yield event
        filtered = await run_in_threadpool(finish)
        finished = True
        for event in _rewrite(held, filtered, turn.generated, chat):
            yield event
    finally:
        if not finished:  # the client went away or generation failed: still audit what was generated
            finish()


def _rewrite(events: list[str], filtered: dict, generated: dict[int, str], chat: bool) -> list[str]:
    """Held-back events, each choice the filter changed carrying its filtered text: all of it in the
    choice's first text event, nothing in the later ones; blocked choices end with `content_filter`."""
    placed: set[int] = set()
    out = []
    for event in events:
        chunk = _parse(event)
        if chunk is None or "choices" not in chunk:
            out.append(event)
            continue
        for c in chunk["choices"]:
            f = filtered.get(c["index"])
            if f is None or (f.text == generated[c["index"]] and not f.blocked):
                continue
            has_text = "text" in c if not chat else (c.get("delta") or {}).get("content") is not None
            if has_text:
                new = "" if c["index"] in placed else f.text
                placed.add(c["index"])
                if chat:
                    c["delta"]["content"] = new
                else:
                    c["text"] = new
                c["logprobs"] = None
            if c.get("finish_reason") and f.blocked:
                c["finish_reason"] = "content_filter"
        out.append(f"data: {json.dumps(chunk)}\n\n")
    return out
