"""Dependencies of the console routes: the studio's state, the signed-in user and workspace, CSRF checks,
and the errors they raise (rendered as pages, or JSON for the scripts' endpoints)."""
from __future__ import annotations

import logging
import threading
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

log = logging.getLogger(__name__)
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
    _readers: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def embedder(self):
        return get_embedder(self.settings.embedder)

    @property
    def qa_models(self) -> dict[str, str]:
        """The QA models bots may choose (LMFORGE_STUDIO_QA_MODELS): folder name -> folder."""
        folders = [f.strip() for f in self.settings.qa_models.split(",") if f.strip()]
        return {Path(f).name: f for f in folders}

    def reader(self, name: str | None):
        """The chosen QA model, loaded once per process; None when the bot chose none, the server no longer
        offers it, or it cannot be loaded (logged; the bot then quotes the best sentence)."""
        folder = self.qa_models.get(name or "")
        if folder is None:
            return None
        with self._lock:
            if folder not in self._readers:
                from ..tasks.inference import Predictor

                try:
                    self._readers[folder] = Predictor.load(folder)
                except (OSError, ValueError) as e:  # ModelError is a ValueError
                    log.error("QA model %s cannot be loaded: %s", folder, e)
                    self._readers[folder] = None
            return self._readers[folder]


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
