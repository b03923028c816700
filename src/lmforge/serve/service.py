"""The generation service: the one way lmforge generates text for anyone. The /v1 routes, the studio
playground and the bots all call `GenerationService.start`, which owns the whole turn:

1. admission: the caller's key's limits and budget, reserving the prompt and `max_tokens` up front
   (accounting.reserve), a cap on rows (prompts x n) per request, and the engine's bounded queue (503);
2. the input rules of the caller's filter policy (moderation, a blocked prompt answers 400
   `content_policy_violation` before any generation);
3. the engine, with the watermark when the policy or the request asks for it;
4. the output rules (moderation, PII redaction): a generation whose output the policy can change is held
   back until it is complete, since text already sent cannot be taken back;
5. usage metering (only the tokens produced: a request stopped early is billed for what it made) and one
   audit record, both written even when the client goes away or the generation fails.

Front ends get typed `Delta`s (choice index, text, token ids, logprobs, finish reason) and shape them as
OpenAI JSON, server-sent events or a bot's reply; nothing re-parses JSON. Nothing above this module touches
an engine."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator

import anyio
from fastapi.concurrency import run_in_threadpool

from ..generate import SamplingParams, TokenLogprob
from ..safety.audit_log import AuditLog
from ..safety.copying import CopyIndex
from ..safety.filters import FilterPolicy, Filtered, filter_output, screen, summary
from ..safety.moderation import ACTIONS, Decision
from ..safety.policies import get_policy, record_events
from ..safety.watermark import WatermarkConfig, WatermarkProcessor
from ..store import ApiKey
from . import accounting
from .engine import DeadlineExceeded, GenerationError, Overloaded
from .served import ServedModel
from .errors import APIError

if TYPE_CHECKING:
    from .serving import AppState

log = logging.getLogger(__name__)


@dataclass
class Caller:
    """Who asks: the key that is limited, metered and whose filter policy applies, and where from."""

    key: ApiKey
    source: str = "api"  # api | playground | bot | cli: recorded in the audit log
    bot: str | None = None
    policy: FilterPolicy | None = None  # None: the key's own policy, from the database
    request_id: str | None = None  # the response's x-request-id, kept in the audit record


@dataclass
class Job:
    """One request as a front end parsed it: prompts as token ids with their sampling settings."""

    model: ServedModel
    endpoint: str  # usage's name for it: completions, chat.completions, bots
    prompts: list[tuple[list[int], SamplingParams]]
    texts: list[str]  # what the input policy and the audit record see (a chat's non-assistant turns)
    params: dict = field(default_factory=dict)  # the request's settings, for the audit record
    watermark: bool = False  # asked for by the request (a policy may also force it)
    check_copying: bool = False
    param: str = "prompt"  # the parameter a blocked input names
    echo: list[str] | None = None  # per prompt: text the answer repeats before the completion (echo=true)


@dataclass
class Delta:
    """What is new in one choice (index = prompt * n + choice) since the last step."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None


@dataclass
class Completed:
    """One finished choice, after the output policy."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: str | None
    copying: dict | None = None


def _strongest(decisions: list[Decision]) -> Decision | None:
    return min(decisions, key=lambda d: ACTIONS.index(d.action)) if decisions else None


class GenerationService:
    """Built once per app (app.py); `start` admits a job and returns its running `Generation`."""

    def __init__(self, state: "AppState"):
        self.state = state
        settings = state.settings
        key = settings.audit_key.get_secret_value() if settings.audit_key else None
        self.audit = AuditLog(settings.audit_log, key=key, redact=settings.audit_redact)
        self.audit_error: str | None = None  # why the last audit write failed (None: it worked); /health shows it
        self.in_flight = 0  # generations admitted and not yet ended
        self._in_flight_lock = threading.Lock()  # ended in worker threads, started on the event loop
        try:
            if self.audit.repair():
                log.warning("the audit log %s ended in a torn line; it was cut off and recorded", self.audit.path)
        except (OSError, ValueError) as e:
            self.audit_error = f"the audit log cannot be repaired ({type(e).__name__}: {e})"
            log.error("%s", self.audit_error)
        self._watermarks: dict[str, WatermarkProcessor] = {}
        self._copy_index: CopyIndex | None = None

    # ------------------------------------------------------------------------------ optional parts

    def watermark(self, served: ServedModel) -> tuple[tuple, dict]:
        """(logits processors, audit info) of the server's watermark; 400 when it is not configured."""
        settings = self.state.settings
        if settings.watermark_key is None:
            raise APIError(400, "Watermarking is not configured on this server: the administrator sets "
                                "LMFORGE_WATERMARK_KEY (this key's policy or the request asked for a watermark).",
                           param="watermark", code="watermark_unavailable")
        processor = self._watermarks.get(served.name)  # one per model: used only by that model's engine thread
        if processor is None:
            config = WatermarkConfig(settings.watermark_key.get_secret_value(), served.model.config.vocab_size,
                                     settings.watermark_gamma, settings.watermark_delta)
            processor = self._watermarks[served.name] = WatermarkProcessor(config)
        c = processor.config
        return (processor,), {"key_id": settings.watermark_key_id, "gamma": c.gamma, "delta": c.delta}

    def copy_index(self) -> CopyIndex:
        """The verbatim-copy index (LMFORGE_COPY_INDEX), loaded once; 400 when none is configured."""
        settings = self.state.settings
        if settings.copy_index is None:
            raise APIError(400, "The copy check is not configured on this server: the administrator builds an index "
                                "with `lmforge data index` and sets LMFORGE_COPY_INDEX to its folder.",
                           param="check_copying", code="copy_check_unavailable")
        if self._copy_index is None:
            try:
                self._copy_index = CopyIndex.load(settings.copy_index)
            except (OSError, ValueError) as e:
                raise APIError(500, f"The server's copy index cannot be read: {e}", param="check_copying",
                               code="copy_check_unavailable") from None
        return self._copy_index

    def count(self, delta: int) -> None:
        with self._in_flight_lock:
            self.in_flight += delta

    # ------------------------------------------------------------------------------------- a turn

    async def start(self, caller: Caller, job: Job) -> "Generation":
        """Admit the job (limits, input policy, queue) and start it on the engine; raises APIError (429, 400,
        503) before anything is generated."""
        state, settings = self.state, self.state.settings
        # Refuse what cannot be served in time before any work (database, moderation): under overload the
        # thread pool those use is itself the queue, so checking only the engine's queue answers late.
        engine = job.model.engine
        if engine is None:
            raise APIError(503, f"The model '{job.model.name}' is not running.", type="server_error",
                           code="model_unavailable", headers={"Retry-After": "5"})
        if self.in_flight >= settings.max_concurrent_requests or engine.queued[0] >= engine.limits.requests:
            raise APIError(503, f"The server is busy ({self.in_flight} requests in progress); retry shortly.",
                           type="server_error", code="server_overloaded", headers={"Retry-After": "1"})
        rows = sum(params.rows for _, params in job.prompts)
        if rows > settings.max_request_rows:
            raise APIError(400, f"Invalid value for 'n': this request asks for {rows} completions (prompts x n); "
                                f"the server's limit is {settings.max_request_rows} per request.", param="n",
                           code="invalid_value")
        if job.check_copying:
            self.copy_index()  # fail now (400) rather than after generating
        prompt_tokens = sum(len(ids) for ids, _ in job.prompts)
        most = sum(params.max_tokens * params.n for _, params in job.prompts)
        self.count(+1)  # until the generation ends (Generation._end / _abandon)
        try:
            reservation = await run_in_threadpool(accounting.reserve, state.db, caller.key, state.prices,
                                                  job.model.name, job.endpoint, prompt_tokens, most)
        except BaseException:
            self.count(-1)
            raise
        gen = Generation(self, caller, job, reservation)
        try:
            await gen._admit()
        except BaseException:
            await _shielded(gen._abandon)
            raise
        return gen


class Generation:
    """A job that was admitted: iterate `deltas()` (streaming) or await `collect()`, once. Usage and the
    audit record are written when it ends, however it ends."""

    def __init__(self, service: GenerationService, caller: Caller, job: Job, reservation: accounting.Reservation):
        self.service, self.caller, self.job, self.reservation = service, caller, job, reservation
        self.policy: FilterPolicy = caller.policy or FilterPolicy()
        self.input: Decision | None = None
        self.watermark_info: dict = {}
        self.streams: list[AsyncIterator] = []
        self.n = [params.n for _, params in job.prompts]
        self.generated: dict[int, Completed] = {}  # choice index -> what the model wrote
        self.filtered: dict[int, Filtered] = {}
        self.prompt_tokens = reservation.prompt_tokens
        self.completion_tokens = 0
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.error: str | None = None
        self._ended = False

    @property
    def headers(self) -> dict[str, str]:
        """Response headers: the key's x-ratelimit-* and, when moderation fired, x-lmforge-moderation."""
        out = self.reservation.headers()
        fired = [f"{side}={d.action}" for side, d in (("input", self.input), ("output", self._output()))
                 if d is not None and d.action != "allow"]
        if fired:
            out["x-lmforge-moderation"] = ", ".join(fired)
        return out

    @property
    def holds(self) -> bool:
        """Whether the output policy can change the text (so a stream is held back until complete)."""
        p = self.policy
        return p.redact_output or (p.output is not None and "block" in p.output.actions.values())

    async def _admit(self) -> None:
        state, job = self.service.state, self.job
        if self.caller.policy is None:
            self.policy = await run_in_threadpool(get_policy, state.db, key_id=self.caller.key.id)
        self.input = await run_in_threadpool(screen, job.texts, self.policy.input)
        if self.input.blocked:
            raise APIError(400, self.input.message, param=job.param, code="content_policy_violation")
        prompts = job.prompts
        if self.policy.watermark or job.watermark:
            processors, self.watermark_info = self.service.watermark(job.model)
            prompts = [(ids, dataclasses.replace(p, extra_processors=p.extra_processors + processors))
                       for ids, p in prompts]
        try:
            self.streams = job.model.engine.submit(prompts, timeout_s=state.settings.request_timeout_s)
        except Overloaded as e:
            raise APIError(503, str(e), type="server_error", code="server_overloaded",
                           headers={"Retry-After": str(e.retry_after)}) from None

    # ---------------------------------------------------------------------------------- results

    async def deltas(self) -> AsyncIterator[list[Delta]]:
        """What each decoding step added, as a list of deltas (choices with nothing new are left out); with a
        policy that can change the output, one list at the end holding each choice whole, filtered. Raises
        APIError when the generation fails or runs out of time (usage and audit are still written)."""
        try:
            if self.holds:
                async for _ in self._run():
                    pass
                await _shielded(self._end)
                yield [Delta(c.index, c.text, c.token_ids, c.logprobs, c.finish_reason) for c in self.results()]
                return
            async for step in self._run():
                yield step
            await _shielded(self._end)
        finally:
            await _shielded(self._end)

    async def collect(self) -> list[Completed]:
        """Every choice, whole, after the output policy (and the copy check when asked)."""
        try:
            async for _ in self._run():
                pass
        finally:
            await _shielded(self._end)
        results = self.results()
        if self.job.check_copying:
            index, threshold = self.service.copy_index(), self.service.state.settings.copy_threshold
            for c in results:
                c.copying = (await run_in_threadpool(index.check, c.text, threshold)).to_dict()
        return results

    def results(self) -> list[Completed]:
        """Every choice whole (with the echoed prompt first, when the job echoes), after the output policy."""
        out = []
        for i in sorted(self.generated):
            c, f = self._whole(i), self.filtered.get(i)
            if f is not None and (f.text != c.text or f.blocked):
                c = dataclasses.replace(c, text=f.text, logprobs=None,  # they would spell out what was removed
                                        finish_reason="content_filter" if f.blocked else c.finish_reason)
            out.append(c)
        return out

    async def _run(self) -> AsyncIterator[list[Delta]]:
        """Merge the prompts' engine streams into steps of deltas, counting tokens as they come."""
        offsets = [sum(self.n[:i]) for i in range(len(self.n))]
        for i, (n, (_, params)) in enumerate(zip(self.n, self.job.prompts)):
            for j in range(n):
                self.generated[offsets[i] + j] = Completed(offsets[i] + j, "", [], [] if params.logprobs is not None
                                                           else None, None)
        try:
            async for i, out in _merge(self.streams):
                step = []
                for j, d in enumerate(out.deltas):
                    c = self.generated[offsets[i] + j]
                    if d.token_ids and self.first_token_at is None:
                        self.first_token_at = time.perf_counter()
                        self.service.state.metrics.ttft.labels(self.job.model.name).observe(
                            self.first_token_at - self.started)
                    self.completion_tokens += len(d.token_ids)
                    c.text += d.text
                    c.token_ids += d.token_ids
                    c.finish_reason = d.finish_reason or c.finish_reason
                    if d.logprobs:
                        c.logprobs = (c.logprobs or []) + list(d.logprobs)
                    if d.text or d.finish_reason or d.logprobs:
                        step.append(Delta(c.index, d.text, list(d.token_ids), d.logprobs, d.finish_reason))
                if step:
                    yield step
        except GenerationError as e:
            self.error = str(e)
            raise APIError(500, "The server had an error while generating this completion.",
                           type="server_error", code="generation_failed") from None
        except DeadlineExceeded as e:
            self.error = str(e)
            raise APIError(504, str(e), type="server_error", code="timeout") from None
        except Overloaded as e:
            self.error = str(e)
            raise APIError(503, str(e), type="server_error", code="server_overloaded",
                           headers={"Retry-After": str(e.retry_after)}) from None

    # ------------------------------------------------------------------------------ bookkeeping

    def _whole(self, i: int) -> Completed:
        c = self.generated[i]
        if self.job.echo is None:
            return c
        return dataclasses.replace(c, text=self.job.echo[self._prompt_of(i)] + c.text)

    def _prompt_of(self, i: int) -> int:
        for p, n in enumerate(self.n):
            if i < n:
                return p
            i -= n
        raise IndexError(i)

    def _output(self) -> Decision | None:
        return _strongest([f.decision for f in self.filtered.values()])

    def _end(self) -> None:
        """Filter the outputs, bill the tokens produced, count and audit (blocking; once)."""
        if self._ended:
            return
        self._ended = True
        self.service.count(-1)
        state = self.service.state
        self.filtered = {i: filter_output(self._whole(i).text, self.policy) for i in self.generated}
        metrics, model = state.metrics, self.job.model.name
        metrics.tokens.labels(model, "prompt").inc(self.prompt_tokens)
        metrics.tokens.labels(model, "completion").inc(self.completion_tokens)
        try:
            accounting.settle(state.db, state.prices, self.reservation, self.completion_tokens)
        finally:
            self._record()

    def _abandon(self) -> None:
        """A job refused after its reservation (blocked input, full queue): nothing billed; blocked input
        is still counted and audited."""
        if not self._ended:
            self._ended = True
            self.service.count(-1)
        accounting.release(self.service.state.db, self.reservation)
        if self.input is not None and self.input.blocked:
            self._record()

    def _record(self) -> None:
        state, key = self.service.state, self.caller.key
        output = self._output()
        try:
            record_events(state.db, {"input": self.input, **({"output": output} if output else {})}, key_id=key.id)
        except Exception:  # noqa: BLE001 - counting must not lose the audit record below
            log.exception("could not count the safety events of a generation")
        texts = self.job.texts
        try:
            self._audit(texts)
            self.service.audit_error = None
        except Exception as e:
            self.service.audit_error = f"the last audit record could not be written ({type(e).__name__}: {e})"
            raise

    def _audit(self, texts: list[str]) -> None:
        key = self.caller.key
        self.service.audit.log_generation(
            model=self.job.model.name, key_id=key.prefix, bot=self.caller.bot, params=self.job.params,
            request_id=self.caller.request_id,
            prompt=texts if len(texts) != 1 else texts[0],
            completion=[self.generated[i].text for i in sorted(self.generated)],
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            moderation={"input": summary(self.input), "output": [summary(f.decision) for f in self.filtered.values()],
                        "source": self.caller.source, **({"error": self.error} if self.error else {})},
            watermark=self.watermark_info)


def audit_log(request) -> AuditLog:
    """The server's audit log (the bots' turns are recorded in it too)."""
    return request.app.state.lmforge.service.audit


async def _shielded(fn) -> None:
    """Run blocking bookkeeping in a thread even while the request is being cancelled (a client that goes
    away cancels the response task; the usage and audit record must still be written)."""
    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(fn)
        except Exception:  # noqa: BLE001 - logged; the client's answer is already decided
            log.exception("bookkeeping of a generation failed")


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
        except Exception as e:  # noqa: BLE001 - handed to the consumer
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
        for s in streams:  # close each so an unfinished one aborts its engine request
            await s.aclose()
