"""Dependencies of the console routes: the studio's state, the signed-in user and workspace, CSRF checks,
and the errors they raise (rendered as pages, or JSON for the scripts' endpoints)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from ..bots.embed import get_embedder
from ..bots.service import BrainCache
from ..bots.tables import StudioSession, User
from ..store import Database
from . import security
from .settings import StudioSettings

HERE = Path(__file__).parent
SESSION_COOKIE = "lmforge_session"
PRELOGIN_COOKIE = "lmforge_prelogin"  # double-submit CSRF token for the sign-in form (no session yet)

templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape is on for .html


class LoginRequired(Exception):
    pass


class StudioError(Exception):
    """An error a page or a script shows: 403 (CSRF), 404 (not yours or absent), 400, 429."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def not_found() -> StudioError:
    return StudioError(404, "Not found.")


@dataclass
class Studio:
    settings: StudioSettings
    brains: BrainCache = field(default_factory=BrainCache)

    @property
    def embedder(self):
        return get_embedder(self.settings.embedder)


def studio(request: Request) -> Studio:
    return request.app.state.studio


def db(request: Request) -> Database:
    return request.app.state.lmforge.db


@dataclass
class Ctx:
    """Who is asking: the user, their session (current workspace, CSRF token) and the database."""

    request: Request
    user: User
    session: StudioSession
    db: Database
    studio: Studio

    @property
    def workspace_id(self) -> int:
        return self.session.workspace_id

    def render(self, name: str, status: int = 200, **context):
        wss = security.workspaces_of(self.db, self.user.id)
        current = next((w for w in wss if w.id == self.workspace_id), None)
        return templates.TemplateResponse(self.request, name, dict(
            user=self.user, csrf=self.session.csrf, workspaces=wss, workspace=current, **context),
            status_code=status)


def current(request: Request) -> Ctx:
    found = security.find_session(db(request), request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise LoginRequired()
    session, user = found
    return Ctx(request, user, session, db(request), studio(request))


async def checked(request: Request) -> Ctx:
    """`current`, for state-changing requests: the CSRF token (form field or X-CSRF-Token header) must match
    the session's."""
    ctx = current(request)
    presented = request.headers.get("x-csrf-token")
    if presented is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        presented = (await request.form()).get("csrf_token")
    if not security.csrf_ok(ctx.session.csrf, presented):
        raise StudioError(403, "The form expired or came from another site (CSRF check failed). Reload the page "
                               "and try again.")
    return ctx
