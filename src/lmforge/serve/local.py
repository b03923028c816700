"""The generation service without a server, for `lmforge generate`: the same admission, filter policy,
metering and audit record as the API, on a local key (`local-cli`, created on first use in LMFORGE_HOME's
database; `lmforge keys policy local-cli` sets its policy), so nothing in lmforge generates around them."""
from __future__ import annotations

import asyncio
from typing import Callable

from sqlalchemy import select

from ..generate import Batcher, SamplingParams
from ..store import ApiKey, Database
from .accounting import load_prices
from .auth import create_key
from .metrics import Metrics
from .service import Caller, GenerationService, Job
from .served import ServedModel
from .serving import AppState
from .settings import Settings

LOCAL_KEY = "local-cli"


def local_key(db: Database) -> ApiKey:
    with db.session() as s:
        key = s.scalar(select(ApiKey).where(ApiKey.name == LOCAL_KEY, ApiKey.revoked_at.is_(None)))
    return key if key is not None else create_key(db, LOCAL_KEY)[0]


def generate(served: ServedModel, prompt: str, params: SamplingParams, on_text: Callable[[str], None],
             settings: Settings | None = None) -> str | None:
    """Generate one completion of `prompt` through the service, handing each new piece of text to `on_text`;
    returns the finish reason. Raises APIError when the service refuses (e.g. the policy blocks the prompt)."""
    Batcher(served.model, served.tokenizer)  # refuses, in one sentence, a model that cannot generate (ModelError)
    settings = settings or Settings()
    db = Database(settings.database)
    db.migrate()
    served.start(Metrics(), settings.max_batch_rows)
    state = AppState(settings, db, load_prices(settings.prices_file), Metrics(), {served.name: served})
    state.service = GenerationService(state)
    try:
        return asyncio.run(_turn(state, local_key(db), served, prompt, params, on_text))
    finally:
        served.stop()
        db.dispose()


async def _turn(state: AppState, key: ApiKey, served, prompt: str, params: SamplingParams, on_text) -> str | None:
    ids = served.tokenizer.encode(prompt)
    job = Job(served, "cli", [(ids, params)], texts=[prompt],
              params={"max_tokens": params.max_tokens, "temperature": params.temperature, "seed": params.seed})
    gen = await state.service.start(Caller(key, source="cli"), job)
    finish = None
    async for step in gen.deltas():
        for d in step:
            if d.text:
                on_text(d.text)
            finish = d.finish_reason or finish
    return finish
