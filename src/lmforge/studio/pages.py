"""Console routes under /studio: sign-in, workspaces, the bot builder, monitor, playground, keys and usage.
They parse forms, check the user and workspace (deps.py) and delegate to lmforge.bots."""
from __future__ import annotations

import secrets
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from pydantic import ValidationError
from sqlalchemy import select

from ..bots import monitoring, service
from ..bots.schema import IntentSpec, intents_from_csv, intents_to_csv
from ..bots.schema import templates as bot_templates
from ..bots.service import NotFound
from ..bots.tables import Membership, Message, User, Workspace
from ..hub import CHAT_MODEL
from ..serve.service import audit_log
from . import security
from .deps import (
    PRELOGIN_COOKIE,
    SESSION_COOKIE,
    Ctx,
    StudioError,
    checked,
    current,
    db,
    not_found,
    studio,
    templates,
)

router = APIRouter(prefix="/studio", include_in_schema=False)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def bot_of(ctx: Ctx, bot_id: int):
    """The bot if it belongs to the user's current workspace; 404 otherwise (never 403: it does not exist
    for them)."""
    try:
        return service.get_bot(ctx.db, ctx.workspace_id, bot_id)
    except NotFound:
        raise not_found() from None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------------------------------ sign-in


@router.get("/login")
def login_page(request: Request, next: str = "/studio/", error: str | None = None):
    token = request.cookies.get(PRELOGIN_COOKIE) or secrets.token_urlsafe(32)
    resp = templates.TemplateResponse(request, "login.html", dict(csrf=token, next=next, error=error, user=None),
                                      status_code=429 if error and "Too many" in error else 200)
    resp.set_cookie(PRELOGIN_COOKIE, token, httponly=True, samesite="strict", path="/studio",
                    secure=studio(request).settings.cookie_secure)
    return resp


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    settings = studio(request).settings
    if not security.csrf_ok(request.cookies.get(PRELOGIN_COOKIE), form.get("csrf_token")):
        raise StudioError(403, "The sign-in form expired or came from another site. Reload the page and try again.")
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    nxt = str(form.get("next", "/studio/"))
    if not nxt.startswith("/studio/") or nxt.startswith("//"):
        nxt = "/studio/"  # only local redirects (no open redirect)
    try:
        user = await run_in_threadpool(security.authenticate, db(request), username, password,
                                       client_address(request), settings.login_max_failures,
                                       settings.login_window_s)
    except security.TooManyAttempts:
        return login_page(request, nxt, "Too many failed sign-ins. Wait a few minutes and try again.")
    if user is None:
        return login_page(request, nxt, "Wrong username or password.")
    try:
        token = security.start_session(db(request), user, settings.session_hours)
    except ValueError as e:
        return login_page(request, nxt, str(e))
    resp = redirect(nxt)
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", path="/",
                    max_age=settings.session_hours * 3600, secure=settings.cookie_secure)
    resp.delete_cookie(PRELOGIN_COOKIE, path="/studio")
    return resp


@router.post("/logout")
def logout(request: Request, ctx: Ctx = Depends(checked)):
    security.end_session(ctx.db, request.cookies.get(SESSION_COOKIE))
    resp = redirect("/studio/login")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.post("/workspace")
async def switch_workspace(ctx: Ctx = Depends(checked)):
    form = await ctx.request.form()
    wanted = int(form.get("workspace_id", 0) or 0)
    if wanted not in {w.id for w in security.workspaces_of(ctx.db, ctx.user.id)}:
        raise not_found()
    with ctx.db.session() as s:
        s.get(type(ctx.session), ctx.session.digest).workspace_id = wanted
    return redirect("/studio/")


# ------------------------------------------------------------------------------------------- admin


@router.get("/admin")
def admin_page(ctx: Ctx = Depends(current), created: str | None = None, error: str | None = None):
    if not ctx.user.is_admin:
        raise not_found()
    with ctx.db.session() as s:
        users = s.execute(select(User.username, Workspace.name).join(Membership, Membership.user_id == User.id)
                          .join(Workspace, Workspace.id == Membership.workspace_id).order_by(User.username)).all()
    return ctx.render("admin.html", users=users, created=created, error=error)


@router.post("/admin/users")
async def admin_create_user(ctx: Ctx = Depends(checked)):
    if not ctx.user.is_admin:
        raise not_found()
    form = await ctx.request.form()
    try:
        await run_in_threadpool(security.create_user, ctx.db, str(form.get("username", "")),
                                str(form.get("password", "")), str(form.get("workspace", "")).strip() or None)
    except ValueError as e:
        return redirect(f"/studio/admin?error={quote(str(e))}")
    return redirect(f"/studio/admin?created={quote(str(form.get('username', '')))}")


# -------------------------------------------------------------------------------------------- bots


@router.get("/")
def home(ctx: Ctx = Depends(current)):
    return ctx.render("home.html", bots=service.list_bots(ctx.db, ctx.workspace_id), templates=bot_templates())


@router.post("/bots")
async def create_bot(ctx: Ctx = Depends(checked)):
    form = await ctx.request.form()
    fields = {k: str(form.get(k, "")).strip() for k in ("name", "purpose", "greeting", "fallback")}
    try:
        # New bots answer what their intents miss with the bundled chat model, where this server serves it.
        served = ctx.request.app.state.lmforge.models.get(CHAT_MODEL)
        chat = CHAT_MODEL if served is not None and served.kind == "generate" else None
        bot = service.create_bot(ctx.db, ctx.workspace_id, str(form.get("template", "blank")), chat, **fields)
    except (ValueError, ValidationError) as e:
        raise StudioError(400, f"Could not create the bot: {e}") from None
    return redirect(f"/studio/bots/{bot.id}")


@router.get("/bots/{bot_id}")
def builder(bot_id: int, ctx: Ctx = Depends(current), error: str | None = None, saved: str | None = None):
    bot = bot_of(ctx, bot_id)
    base = str(ctx.request.base_url).rstrip("/")
    return ctx.render("bot.html", bot=bot, intents=service.intents(ctx.db, bot),
                      documents=service.documents(ctx.db, bot), training=service.training_state(ctx.db, bot),
                      base=base, origins=service.origins(bot), error=error, saved=saved,
                      models=sorted(n for n, m in ctx.request.app.state.lmforge.models.items() if m.kind == "generate"),
                      qa_models=sorted(ctx.studio.qa_models))


@router.post("/bots/{bot_id}/settings")
async def save_settings(bot_id: int, ctx: Ctx = Depends(checked)):
    bot = bot_of(ctx, bot_id)
    form = await ctx.request.form()
    try:
        threshold = float(form.get("threshold", bot.threshold))
        if not 0 <= threshold <= 1:
            raise ValueError
    except ValueError:
        return redirect(f"/studio/bots/{bot.id}?error=" + quote("The threshold must be a number from 0 to 1."))
    origins = [o.strip().rstrip("/") for o in str(form.get("allowed_origins", "")).split()]
    bad = [o for o in origins if not o.startswith(("http://", "https://")) or o.count("/") != 2]
    if bad:
        return redirect(f"/studio/bots/{bot.id}?error=" + quote(f"Not an origin (scheme://host[:port]): {bad[0]}"))
    model = str(form.get("generative_model", "")).strip() or None
    qa_model = str(form.get("qa_model", "")).strip() or None
    if qa_model is not None and qa_model not in ctx.studio.qa_models:
        return redirect(f"/studio/bots/{bot.id}?error=" + quote("This server offers no QA model of that name."))
    service.update_bot(ctx.db, bot, name=str(form.get("name", bot.name)).strip()[:100] or bot.name,
                       purpose=str(form.get("purpose", "")), greeting=str(form.get("greeting", "")),
                       fallback=str(form.get("fallback", "")), threshold=threshold,
                       allowed_origins="\n".join(origins), generative_model=model, qa_model=qa_model,
                       tune_encoder=form.get("tune_encoder") == "on")
    return redirect(f"/studio/bots/{bot.id}?saved=settings")


@router.post("/bots/{bot_id}/delete")
def delete_bot(bot_id: int, ctx: Ctx = Depends(checked)):
    service.delete_bot(ctx.db, bot_of(ctx, bot_id))
    return redirect("/studio/")


@router.post("/bots/{bot_id}/intents")
async def save_intents(bot_id: int, ctx: Ctx = Depends(checked)):
    """The intents table: rows of name / examples (one per line) / answer; an empty name drops the row."""
    bot = bot_of(ctx, bot_id)
    form = await ctx.request.form()
    names, examples, answers = form.getlist("name"), form.getlist("examples"), form.getlist("answer")
    try:
        specs = [IntentSpec(name=str(n).strip(), examples=str(e).splitlines(), answer=str(a).strip())
                 for n, e, a in zip(names, examples, answers) if str(n).strip()]
        service.replace_intents(ctx.db, bot, specs)
    except (ValueError, ValidationError) as e:
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        return redirect(f"/studio/bots/{bot.id}?error=" + quote(f"Intents not saved: {msg}") + "#intents")
    return redirect(f"/studio/bots/{bot.id}?saved=intents#intents")


@router.post("/bots/{bot_id}/intents/import")
async def import_intents(bot_id: int, ctx: Ctx = Depends(checked)):
    bot = bot_of(ctx, bot_id)
    upload = (await ctx.request.form()).get("file")
    try:
        text = (await upload.read()).decode("utf-8") if upload is not None and hasattr(upload, "read") else ""
        service.merge_intents(ctx.db, bot, intents_from_csv(text))
    except (UnicodeDecodeError, ValueError) as e:
        return redirect(f"/studio/bots/{bot.id}?error=" + quote(f"CSV not imported: {e}") + "#intents")
    return redirect(f"/studio/bots/{bot.id}?saved=import#intents")


@router.get("/bots/{bot_id}/intents.csv")
def export_intents(bot_id: int, ctx: Ctx = Depends(current)):
    bot = bot_of(ctx, bot_id)
    return Response(intents_to_csv(service.as_specs(service.intents(ctx.db, bot))), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="bot-{bot.id}-intents.csv"'})


@router.post("/bots/{bot_id}/documents")
async def upload_document(bot_id: int, ctx: Ctx = Depends(checked)):
    bot = bot_of(ctx, bot_id)
    upload = (await ctx.request.form()).get("file")
    if upload is None or not hasattr(upload, "read") or not upload.filename:
        return redirect(f"/studio/bots/{bot.id}?error=" + quote("Choose a .txt or .md file.") + "#knowledge")
    name = upload.filename.replace("\\", "/").split("/")[-1]
    if not name.lower().endswith((".txt", ".md", ".markdown")):
        return redirect(f"/studio/bots/{bot.id}?error=" + quote("Only plain text (.txt) and Markdown (.md).") + "#knowledge")
    try:
        text = (await upload.read()).decode("utf-8")
    except UnicodeDecodeError:
        return redirect(f"/studio/bots/{bot.id}?error=" + quote("The file is not UTF-8 text.") + "#knowledge")
    service.add_document(ctx.db, bot, name, text)
    return redirect(f"/studio/bots/{bot.id}?saved=document#knowledge")


@router.post("/bots/{bot_id}/documents/{doc_id}/delete")
def delete_document(bot_id: int, doc_id: int, ctx: Ctx = Depends(checked)):
    bot = bot_of(ctx, bot_id)
    try:
        service.delete_document(ctx.db, bot, doc_id)
    except NotFound:
        raise not_found() from None
    return redirect(f"/studio/bots/{bot.id}?saved=document#knowledge")


# ---------------------------------------------------------------------------------- train and test


def _training_json(row) -> dict:
    return dict(status=row.status, progress=row.progress, message=row.message, version=row.version)


@router.post("/bots/{bot_id}/train")
async def train(bot_id: int, ctx: Ctx = Depends(checked)):
    bot = bot_of(ctx, bot_id)
    if service.start_training(ctx.db, bot):
        if ctx.studio.settings.train_in_thread:
            service.train_in_background(ctx.db, bot, ctx.studio.embedder)
        else:
            await run_in_threadpool(service.train, ctx.db, bot, ctx.studio.embedder)
    if "application/json" in ctx.request.headers.get("accept", ""):
        return _training_json(service.training_state(ctx.db, bot))
    return redirect(f"/studio/bots/{bot.id}#train")


@router.get("/bots/{bot_id}/train")
def training_status(bot_id: int, ctx: Ctx = Depends(current)):
    return _training_json(service.training_state(ctx.db, bot_of(ctx, bot_id)))


@router.post("/bots/{bot_id}/test")
async def test_chat(bot_id: int, ctx: Ctx = Depends(checked)):
    """The test panel: JSON {message, conversation?} -> the answer with what matched and how confidently."""
    from .public import generator

    bot = bot_of(ctx, bot_id)
    body = await ctx.request.json()
    text = str(body.get("message", "")).strip()[:2000]
    if not text:
        raise StudioError(400, "Type a message.")
    try:
        conv = service.conversation(ctx.db, bot, "test", body.get("conversation") or None)
    except NotFound:
        raise not_found() from None
    msg, reply = await service.chat(ctx.db, ctx.studio.brains, ctx.studio.embedder, bot, conv, text,
                                    generator(ctx.request, bot),
                                    audit=audit_log(ctx.request),
                                    reader=await run_in_threadpool(ctx.studio.reader, bot.qa_model))
    return dict(answer=reply.text, source=reply.source, intent=reply.intent, document=reply.document,
                confidence=round(reply.confidence, 3), example=reply.example, message_id=msg.id,
                conversation=conv.secret, latency_ms=round(reply.latency_ms, 1), threshold=bot.threshold)


# ---------------------------------------------------------------------------------- monitor, improve


@router.get("/bots/{bot_id}/monitor")
async def monitor(bot_id: int, ctx: Ctx = Depends(current), days: int = 14, saved: str | None = None):
    bot = bot_of(ctx, bot_id)
    days = max(1, min(days, 90))
    st = await run_in_threadpool(monitoring.stats, ctx.db, bot, days, ctx.studio.embedder)
    charts = [monitoring.bar_chart(st["days"], st["messages_per_day"], "messages per day"),
              monitoring.bar_chart(st["days"], st["conversations_per_day"], "conversations per day")]
    if st["blocked"] or st["flagged"]:
        charts += [monitoring.bar_chart(st["days"], st["blocked_per_day"], "blocked by the safety policy per day"),
                   monitoring.bar_chart(st["days"], st["flagged_per_day"], "flagged by the safety policy per day")]
    return ctx.render("monitor.html", bot=bot, st=st, charts=charts, days=days, saved=saved,
                      intent_names=[i.name for i in service.intents(ctx.db, bot)])


@router.post("/bots/{bot_id}/improve")
async def improve(bot_id: int, ctx: Ctx = Depends(checked)):
    """One click: a logged question becomes an example of an intent (a new one if the name is new), and
    the bot retrains."""
    bot = bot_of(ctx, bot_id)
    form = await ctx.request.form()
    try:
        message_id = int(form.get("message_id", 0))
    except ValueError:
        raise StudioError(400, "Bad message id.") from None
    with ctx.db.session() as s:
        msg = s.scalar(select(Message).where(Message.id == message_id, Message.bot_id == bot.id))
    if msg is None:
        raise not_found()
    intent, answer = str(form.get("intent", "")).strip(), str(form.get("answer", "")).strip()
    known = {i.name: i for i in service.intents(ctx.db, bot)}
    if not answer and not (intent in known and known[intent].answer):
        return redirect(f"/studio/bots/{bot.id}/monitor?saved=" + quote(f"Give an answer for the new intent {intent!r}."))
    try:
        service.add_example(ctx.db, bot, intent, msg.question, answer, message_id=msg.id)
    except ValidationError:
        return redirect(f"/studio/bots/{bot.id}/monitor?saved=" + quote("The intent name may use letters, digits, "
                                                                        "spaces, - and _ only."))
    if service.start_training(ctx.db, bot):
        if ctx.studio.settings.train_in_thread:
            service.train_in_background(ctx.db, bot, ctx.studio.embedder)
        else:
            await run_in_threadpool(service.train, ctx.db, bot, ctx.studio.embedder)
    return redirect(f"/studio/bots/{bot.id}/monitor?saved=" + quote(f"Added as an example of {form.get('intent')}; "
                                                                    "retraining."))


@router.get("/bots/{bot_id}/export.{fmt}")
def export(bot_id: int, fmt: str, ctx: Ctx = Depends(current)):
    bot = bot_of(ctx, bot_id)
    if fmt == "csv":
        return Response(monitoring.export_csv(ctx.db, bot), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="bot-{bot.id}-conversations.csv"'})
    if fmt == "jsonl":
        return PlainTextResponse(monitoring.export_jsonl(ctx.db, bot), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f'attachment; filename="bot-{bot.id}-conversations.jsonl"'})
    raise not_found()
