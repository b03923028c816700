"""Public bot routes under /bots/{token}: the channels. Separate from the console: no session, no cookies;
the bot's public token is the only credential and reaches only that bot and its own conversations.

* REST (`POST /bots/{token}/messages`, `POST /bots/{token}/feedback`) for apps and the widget; browsers may
  call it only from the origins the owner listed (CORS, checked per bot).
* Widget (`GET /bots/{token}/widget.js`): a script tag for any web page.
* Webhook (`POST /bots/{token}/webhook`): a generic adapter for messaging platforms, signed with HMAC-SHA256.

Every POST is rate limited per client address and per bot (bots/ratelimit.py): 429 with Retry-After."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..bots import channels, ratelimit, service
from ..bots.service import NotFound
from ..generate import SamplingParams
from ..safety.policies import get_policy
from ..serve.errors import APIError
from ..serve.service import Caller, Job, audit_log
from .playground import internal_key
from .deps import HERE

router = APIRouter(prefix="/bots", include_in_schema=False)
log = logging.getLogger(__name__)

MAX_MESSAGE = 2000


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=status, headers=headers)


def _bot(request: Request, token: str):
    try:
        return service.bot_by_token(request.app.state.lmforge.db, token)
    except NotFound:
        return None


async def limited(request: Request, bot, headers: dict | None = None) -> JSONResponse | None:
    """The 429 answer when this client (or everyone together) sent this bot too much this minute, else None."""
    settings = request.app.state.studio.settings
    address = request.client.host if request.client else "unknown"
    retry = await run_in_threadpool(ratelimit.admit, request.app.state.lmforge.db, bot.id, address,
                                    settings.bot_rpm_per_client, settings.bot_rpm_per_bot)
    if retry is None:
        return None
    return JSONResponse({"error": {"message": f"Too many messages to this bot; try again in {retry} s.",
                                   "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                        status_code=429, headers={**(headers or {}), "Retry-After": retry})


def cors_headers(request: Request, bot) -> dict[str, str] | None:
    """CORS headers when the request's Origin is one the owner listed; {} without an Origin (server-to-
    server calls); None for an origin that is not allowed."""
    origin = request.headers.get("origin")
    if origin is None:
        return {}
    if bot is None or origin.rstrip("/") not in service.origins(bot):
        return None
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600"}


def generator(request: Request, bot):
    """The generative fallback: the bot's chosen model from those this server serves, prompted with the
    bot's purpose, through the generation service (the bot's filter policy, its workspace's `bots` key for
    limits and usage, the audit record); None when that model is not served or the service refuses."""
    state = request.app.state.lmforge

    async def generate(model: str, purpose: str, question: str) -> str | None:
        served = state.models.get(model)
        if served is None or served.kind != "generate" or served.engine is None:
            return None
        system = f"You are a helpful assistant. {purpose}".strip()
        prompt = served.chat_template.render([{"role": "system", "content": system},
                                              {"role": "user", "content": question}])
        ids = served.tokenizer.encode(prompt)
        room = served.context_length - len(ids)
        if room < 4:
            return None
        params = SamplingParams(max_tokens=min(64, room), temperature=0.7, top_p=0.9, seed=0,
                                stop=list(served.chat_template.stop))
        key = await run_in_threadpool(internal_key, state.db, bot.workspace_id, "bots")
        policy = await run_in_threadpool(get_policy, state.db, bot_id=bot.id)
        job = Job(served, "bots", [(ids, params)], texts=[question], params={"max_tokens": params.max_tokens},
                  param="message")
        try:
            gen = await state.service.start(Caller(key, source="bot", bot=str(bot.id), policy=policy), job)
            [choice] = await gen.collect()
        except APIError as e:  # refused (limits, policy, a busy server) or failed: the bot's fallback answers
            log.info("bot %s: generation refused: %s", bot.id, e.message)
            return None
        return choice.text

    return generate


@router.options("/{token}/{what}")
def preflight(token: str, what: str, request: Request):
    headers = cors_headers(request, _bot(request, token))
    if not headers:  # unknown bot or origin: no CORS headers, so the browser refuses the call
        return Response(status_code=403)
    return Response(status_code=204, headers=headers)


async def _admit(request: Request, token: str) -> tuple:
    """(bot, CORS headers, None) for a browser call the bot accepts, else (.., .., the 403/404/429 answer)."""
    bot = _bot(request, token)
    headers = cors_headers(request, bot)
    if headers is None:
        return bot, None, _error(403, "This origin may not use this bot; the owner lists allowed origins in the "
                                      "studio.")
    if bot is None:
        return None, headers, _error(404, "No bot has this token.", headers)
    return bot, headers, await limited(request, bot, headers)


async def _json(request: Request) -> dict | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


@router.post("/{token}/messages")
async def message(token: str, request: Request):
    bot, headers, refused = await _admit(request, token)
    if refused is not None:
        return refused
    body = await _json(request)
    incoming = channels.rest_in(body)
    if incoming is None:
        return _error(400, f"Send JSON: {{\"message\": \"...\" (1 to {MAX_MESSAGE} characters), "
                           "\"conversation\": \"...\" (optional)}.", headers)
    db, st = request.app.state.lmforge.db, request.app.state.studio
    try:
        conv = service.conversation(db, bot, incoming.channel, incoming.conversation)
    except NotFound:
        return _error(404, "No conversation with this id for this bot.", headers)
    msg, reply = await service.chat(db, st.brains, st.embedder, bot, conv, incoming.text, generator(request, bot),
                                    audit=audit_log(request), reader=await run_in_threadpool(st.reader, bot.qa_model))
    return JSONResponse(channels.rest_out(conv, msg, reply), headers=headers)


@router.post("/{token}/feedback")
async def feedback(token: str, request: Request):
    bot, headers, refused = await _admit(request, token)
    if refused is not None:
        return refused
    body = await _json(request) or {}
    db = request.app.state.lmforge.db
    try:
        conv = service.conversation(db, bot, "rest", str(body.get("conversation", "")) or None)
        if not body.get("conversation"):
            return _error(400, "Send the conversation id the answer came with.", headers)
        service.rate(db, bot, int(body.get("message_id", 0)), int(body.get("rating", 0)), conv)
    except NotFound:
        return _error(404, "No such answer in this conversation.", headers)
    except (TypeError, ValueError):
        return _error(400, "Send JSON: {\"conversation\": ..., \"message_id\": ..., \"rating\": 1 or -1}.", headers)
    return JSONResponse({"ok": True}, headers=headers)


@router.get("/{token}/widget.js")
def widget(token: str, request: Request):
    bot = _bot(request, token)
    if bot is None:
        return Response("/* no bot has this token */", status_code=404, media_type="text/javascript")
    script = (HERE / "static" / "widget.js").read_text(encoding="utf-8")
    config = json.dumps({"endpoint": str(request.base_url).rstrip("/") + f"/bots/{token}",
                         "title": bot.name, "greeting": bot.greeting})
    # json.dumps does not escape "</": harmless in a .js file, which is never parsed as HTML
    return Response(f"(function(){{var LMFORGE_BOT={config};\n{script}\n}})();", media_type="text/javascript",
                    headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"})


@router.post("/{token}/webhook")
async def webhook(token: str, request: Request):
    """Generic webhook: `{"sender": "...", "text": "..."}` signed with `X-Lmforge-Signature: sha256=<hex
    HMAC of the body with the bot's webhook secret>`; answers `{"recipient", "text", ...}`."""
    bot = _bot(request, token)
    if bot is None:
        return _error(404, "No bot has this token.")
    raw = await request.body()
    want = "sha256=" + hmac.new(bot.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, request.headers.get("x-lmforge-signature", "")):
        return _error(401, "Bad or missing X-Lmforge-Signature (sha256=HMAC of the body with the webhook secret).")
    if (refused := await limited(request, bot)) is not None:
        return refused
    try:
        incoming = channels.webhook_in(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        incoming = None
    if incoming is None:
        return _error(400, "Send JSON: {\"sender\": \"...\", \"text\": \"...\"}.")
    db, st = request.app.state.lmforge.db, request.app.state.studio
    conv = service.conversation(db, bot, "webhook", external_id=incoming.sender)
    msg, reply = await service.chat(db, st.brains, st.embedder, bot, conv, incoming.text, generator(request, bot),
                                    audit=audit_log(request), reader=await run_in_threadpool(st.reader, bot.qa_model))
    return JSONResponse(channels.webhook_out(incoming, msg, reply))
