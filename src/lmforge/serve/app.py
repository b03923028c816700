"""The FastAPI application factory. `create_app(settings)` builds the app; its lifespan opens the database
(migrating it), loads the models and starts their engines. Later front ends (the studio) include their
routers into the returned app."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from ..store import Database
from . import errors
from .accounting import load_prices
from .auth import create_key, find_key
from .engine import QueueLimits
from .served import ServedModel, load_served
from .metrics import Metrics
from .middleware import OpsGate, Overload, RequestContext
from .routes import health, moderations, openai, usage, watermark
from .service import GenerationService
from .serving import AppState
from .settings import Settings

log = logging.getLogger(__name__)


def load_models(settings: Settings) -> list[ServedModel]:
    """The served models. One that cannot be loaded (a truncated file, an architecture lmforge lacks) is
    reported in one line and left out, so the others are still served; none at all is an error."""
    from ..models import ModelError

    names = settings.models
    if not names:
        from .demo_models import default_models

        names = default_models(settings.home)
    dtype = getattr(torch, settings.dtype)
    served, failed = [], []
    for name in names:
        try:
            served.append(load_served(name, settings.device, dtype, settings.quantize))
        except (ModelError, OSError) as e:
            log.error("not serving %s: %s", name, e)
            failed.append(f"{name}: {e}")
    if not served:
        raise ModelError(f"no model could be loaded ({'; '.join(failed)})")
    return served


def create_app(settings: Settings | None = None, models: list[ServedModel] | None = None) -> FastAPI:
    """The API app. `models` (already loaded) replaces loading `settings.models`, e.g. in tests."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        db = Database(settings.database)
        db.migrate()
        if settings.bootstrap_key is not None:
            secret = settings.bootstrap_key.get_secret_value()
            if find_key(db, secret) is None:
                create_key(db, f"bootstrap-{int(time.time())}", key=secret)
        metrics = Metrics()
        served = models if models is not None else load_models(settings)
        limits = QueueLimits(settings.max_queued_requests, settings.max_queued_tokens, settings.max_queue_wait_s)
        for m in served:
            m.start(metrics, settings.max_batch_rows, limits, settings.threads)
        state = app.state.lmforge = AppState(settings, db, load_prices(settings.prices_file), metrics,
                                             {m.name: m for m in served})
        state.service = GenerationService(state)
        log.info("serving %s", ", ".join(m.name for m in served))
        try:
            yield
        finally:
            for m in served:
                m.stop()
            db.dispose()

    app = FastAPI(title="lmforge", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible API for the models on this machine.")
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(OpsGate, access=settings.ops_access)
    app.add_middleware(Overload)
    app.add_middleware(RequestContext)  # added last: outermost, so every answer has its x-request-id
    app.include_router(openai.router)
    app.include_router(usage.router)
    app.include_router(moderations.router)
    app.include_router(watermark.router)
    app.include_router(health.router)
    from ..studio import install as install_studio  # studio: console under /studio, bot channels under /bots
    install_studio(app)
    return app
