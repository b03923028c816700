"""The studio: a browser console (under /studio) for the playground, the bot builder, monitoring and keys,
and the public bot channels (under /bots). `install(app)` adds both to the API app of `serve/app.py`."""
from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from .deps import HERE, LoginRequired, Studio, StudioError, templates
from .security import announce_admin, ensure_admin
from .settings import StudioSettings

__all__ = ["announce_admin", "ensure_admin", "install"]

# No inline scripts or styles anywhere, so a script that slipped into a page could not run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def install(app: FastAPI, settings: StudioSettings | None = None) -> None:
    from ..bots import tables  # noqa: F401  (registers the studio tables on the store's metadata)
    from . import pages, playground, public

    app.state.studio = Studio(settings or StudioSettings())
    app.include_router(pages.router)
    app.include_router(playground.router)
    app.include_router(public.router)
    app.mount("/studio/static", StaticFiles(directory=HERE / "static"), name="studio-static")

    @app.get("/", include_in_schema=False)
    def _root():  # the address `lmforge serve` prints: a person opening it wants the studio, not a JSON 404
        return RedirectResponse("/studio", status_code=307)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired):
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/studio/login?next=" + quote(request.url.path), status_code=303)
        return JSONResponse({"error": {"message": "Sign in first.", "type": "auth", "param": None,
                                       "code": "login_required"}}, status_code=401)

    @app.exception_handler(StudioError)
    async def _studio_error(request: Request, exc: StudioError):
        if "text/html" in request.headers.get("accept", ""):
            return templates.TemplateResponse(request, "error.html", dict(status=exc.status, message=exc.message,
                                                                          user=None), status_code=exc.status,
                                              headers=exc.headers)
        return JSONResponse({"error": {"message": exc.message, "type": "studio", "param": None, "code": None}},
                            status_code=exc.status, headers=exc.headers)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/studio"):
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
