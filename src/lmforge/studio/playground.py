"""The playground and the keys & usage pages. The playground generates through the generation service, as
/v1 does (serve/service.py: limits, the key's filter policy, watermark, usage and the audit record), with a
key that belongs to the user's workspace (created on first use, labelled `playground`), so its runs are
counted, priced, moderated and audited like any API call."""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from ..bots.tables import Workspace, WorkspaceKey
from ..hub import CHAT_MODEL
from ..serve import protocol as p
from ..serve import serving
from ..serve.middleware import request_id
from ..serve.service import Caller
from ..serve.accounting import usage_report
from ..serve.auth import create_key, revoke_key
from ..store import ApiKey
from .deps import Ctx, StudioError, checked, current, not_found

router = APIRouter(prefix="/studio", include_in_schema=False)


def workspace_keys(ctx: Ctx, internal: bool | None = None) -> list[tuple[ApiKey, WorkspaceKey]]:
    q = (select(ApiKey, WorkspaceKey).join(WorkspaceKey, WorkspaceKey.key_id == ApiKey.id)
         .where(WorkspaceKey.workspace_id == ctx.workspace_id).order_by(ApiKey.id))
    if internal is not None:
        q = q.where(WorkspaceKey.internal == internal)
    with ctx.db.session() as s:
        return [tuple(r) for r in s.execute(q).all()]


def _new_key(ctx: Ctx, label: str, internal: bool = False, **limits) -> tuple[ApiKey, str]:
    return _create(ctx.db, ctx.workspace_id, label, internal, **limits)


def _create(db, workspace_id: int, label: str, internal: bool = False, **limits) -> tuple[ApiKey, str]:
    with db.session() as s:
        ws = s.get(Workspace, workspace_id)
    # api_keys.name is unique server-wide: qualify it with the workspace and a random suffix
    row, key = create_key(db, f"{ws.name}/{label}/{secrets.token_hex(3)}", **limits)
    with db.session() as s:
        s.add(WorkspaceKey(key_id=row.id, workspace_id=workspace_id, label=label, internal=internal))
    return row, key


def internal_key(db, workspace_id: int, label: str) -> ApiKey:
    """The workspace's own key for `label` (`playground`, `bots`: what the studio generates with, metered
    and audited like any key), created on first use."""
    q = (select(ApiKey).join(WorkspaceKey, WorkspaceKey.key_id == ApiKey.id)
         .where(WorkspaceKey.workspace_id == workspace_id, WorkspaceKey.internal.is_(True),
                WorkspaceKey.label == label, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id))
    with db.session() as s:
        key = s.scalars(q).first()
    return key if key is not None else _create(db, workspace_id, label, internal=True)[0]


def playground_key(ctx: Ctx) -> ApiKey:
    return internal_key(ctx.db, ctx.workspace_id, "playground")


def _models(ctx: Ctx) -> list[str]:
    """The generators, the bundled chat model first (it is the one that answers questions), then by name."""
    names = (n for n, m in ctx.request.app.state.lmforge.models.items() if m.kind == "generate")
    return sorted(names, key=lambda n: (n != CHAT_MODEL, n))


@router.get("/playground")
def playground(ctx: Ctx = Depends(current)):
    state = ctx.request.app.state.lmforge
    prices = {m: state.prices.models.get(m, state.prices.default).model_dump() for m in _models(ctx)}
    cards = {m: state.models[m].card for m in _models(ctx)}
    return ctx.render("playground.html", models=_models(ctx), cards=cards, prices=json.dumps(prices),
                      base=str(ctx.request.base_url).rstrip("/"))


@router.post("/playground/run")
async def run(ctx: Ctx = Depends(checked)):
    """JSON {model, mode: chat|completion, messages | prompt, temperature, top_p, max_tokens, stop} ->
    the OpenAI server-sent events stream, with usage in the last chunk."""
    body = await ctx.request.json()
    if not isinstance(body, dict):
        raise StudioError(400, "Send a JSON object.")
    common = {k: body[k] for k in ("model", "temperature", "top_p", "max_tokens", "stop") if body.get(k) not in (None, "", [])}
    common.update(stream=True, stream_options={"include_usage": True})
    state = ctx.request.app.state.lmforge
    key = await run_in_threadpool(playground_key, ctx)
    caller = Caller(key, source="playground", request_id=request_id(ctx.request.scope))
    try:
        if body.get("mode") == "completion":
            req = p.CompletionRequest(prompt=body.get("prompt", ""), **common)
            return await serving.completions(state, caller, req, ctx.request)
        messages, dropped = fit_history(state.models.get(body.get("model")), body.get("messages", []),
                                        common.get("max_tokens"))
        req = p.ChatCompletionRequest(messages=messages, **common)
        response = await serving.chat_completions(state, caller, req, ctx.request)
        if dropped:  # the page says so next to the answer
            response.headers["x-lmforge-dropped-messages"] = str(dropped)
        return response
    except ValidationError as e:
        err = e.errors()[0]
        raise StudioError(400, f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def fit_history(served, messages: list, max_tokens: int | None) -> tuple[list, int]:
    """A kept conversation trimmed oldest-first (system messages and the newest message stay) until its prompt
    leaves room for `max_tokens` (or a quarter of the context) in the model's context; returns the messages
    and how many were left out. Anything it cannot read is passed on for the API to judge."""
    if served is None or served.kind != "generate" or not isinstance(messages, list):
        return messages, 0
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        return messages, 0
    room = served.context_length - (max_tokens if isinstance(max_tokens, int) else served.context_length // 4)
    kept = list(messages)
    while len(kept) > 1:
        try:
            prompt = served.chat_template.render(kept)
        except ValueError:
            break
        if len(served.tokenizer.encode(prompt)) <= room:
            break
        oldest = next((i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"), None)
        if oldest is None:
            break
        del kept[oldest]
    return kept, len(messages) - len(kept)


# ---------------------------------------------------------------------------------------------- keys


@router.get("/keys")
def keys_page(ctx: Ctx = Depends(current), days: int = 30):
    rows = workspace_keys(ctx)
    names = {k.name: wk.label for k, wk in rows}
    start = datetime.now(timezone.utc) - timedelta(days=max(1, min(days, 365)))
    usage = [dict(r, label=names[r["key"]]) for r in usage_report(ctx.db, start=start) if r["key"] in names]
    new_key = ctx.request.cookies.get("lmforge_new_key")  # shown once, right after creation
    resp = ctx.render("keys.html", keys=rows, usage=usage, days=days, new_key=new_key,
                      total=sum(r["cost_usd"] for r in usage))
    if new_key:
        resp.delete_cookie("lmforge_new_key", path="/studio/keys")
    return resp


@router.post("/keys")
async def keys_create(ctx: Ctx = Depends(checked)):
    form = await ctx.request.form()
    label = str(form.get("label", "")).strip()[:60]
    if not label:
        raise StudioError(400, "Give the key a name.")

    def limit(name, cast):
        v = str(form.get(name, "")).strip()
        return cast(v) if v else None

    try:
        _, key = _new_key(ctx, label, rpm=limit("rpm", int), tpm=limit("tpm", int), budget_usd=limit("budget", float))
    except ValueError as e:
        raise StudioError(400, f"Key not created: {e}") from None
    resp = RedirectResponse("/studio/keys", status_code=303)
    # the key travels once in a short-lived, HttpOnly cookie scoped to the keys page, not in the URL (logs)
    resp.set_cookie("lmforge_new_key", key, max_age=60, httponly=True, samesite="strict", path="/studio/keys",
                    secure=ctx.studio.settings.cookie_secure)
    return resp


@router.post("/keys/{key_id}/revoke")
def keys_revoke(key_id: int, ctx: Ctx = Depends(checked)):
    match = [k for k, _ in workspace_keys(ctx) if k.id == key_id]
    if not match:
        raise not_found()
    revoke_key(ctx.db, match[0].name)
    return RedirectResponse("/studio/keys", status_code=303)
