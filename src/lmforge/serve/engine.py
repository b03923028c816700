"""The serving engine: one background thread per generative model runs a continuous `Batcher`;
HTTP handlers submit requests and read their token deltas from an asyncio queue.

Requests join the running batch at the next decoding step (if the batch has room for their rows: n choices,
or num_beams beams) and leave when they finish or their client goes away."""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator

import torch

from ..generate import Batcher, RequestOutput, SamplingParams
from .metrics import Metrics

log = logging.getLogger(__name__)

# torch's intra-op threads (OpenMP) for an engine thread: all cores but one, which is left to the HTTP loop,
# tokenizing and the moderation model. The setting is per thread, and threads interfere: once one thread has
# run a multi-threaded op, the multi-threaded ops of another run 2.5x slower here (SmolLM2 decoding at 2
# threads: 53 tok/s in an engine thread when no other thread had computed with 2 threads, 20 tok/s after the
# main thread or a moderation call had; 36 tok/s with one engine thread). So `lmforge serve` also keeps its main
# thread to one thread (`single_threaded_main`).
COMPUTE_THREADS = max(1, torch.get_num_threads() - 1)


def single_threaded_main() -> None:
    """Call before a process loads its models, so that its engine threads get the cores (see COMPUTE_THREADS)."""
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------- engine


class GenerationError(RuntimeError):
    """This request's generation failed (its batch-mates carry on); the message is safe to show."""


class Overloaded(RuntimeError):
    """The queue is full, or a request waited in it past its deadline: answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(RuntimeError):
    """A request ran past its deadline; it was stopped (what it generated is billed)."""


@dataclass
class _Submission:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    tokens: int  # prompt + most completion tokens: its weight in the queue's token bound
    deadline: float | None  # time.monotonic() by which it must finish
    queue_deadline: float | None  # ... and by which it must have joined the batch
    queued: bool = True


@dataclass
class QueueLimits:
    """Backpressure (TGI's --max-concurrent-requests, per model): requests waiting to join the batch, and the
    tokens they may cost, are bounded; more are refused at once rather than left to queue."""

    requests: int = 128
    tokens: int = 200_000  # prompt + max_tokens of the waiting requests
    wait_s: float = 10.0  # a request still waiting after this is refused (503) instead of served late


class Engine:
    """Runs a Batcher in a thread. `submit()` is the async face: one iterator of RequestOutputs per prompt."""

    def __init__(self, name: str, model, tokenizer, metrics: Metrics | None = None, max_rows: int = 64,
                 stop_ids: frozenset[int] = frozenset(), limits: QueueLimits | None = None,
                 threads: int | None = None):
        self.name = name
        self.threads = threads or COMPUTE_THREADS
        self.batcher = Batcher(model, tokenizer, stop_ids)
        self.metrics = metrics
        self.max_rows = max_rows
        self.limits = limits or QueueLimits()
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[_Submission] = []
        self._running: dict[str, _Submission] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the two queue counters, updated from the loop and the thread
        self._queued_requests = self._queued_tokens = 0
        self.steps = 0  # decoding steps so far (tests: "stopped within a step")
        self._thread = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout=10)

    @property
    def queued(self) -> tuple[int, int]:
        """(requests, tokens) waiting to join the batch."""
        return self._queued_requests, self._queued_tokens

    def submit(self, prompts: list[tuple[list[int], SamplingParams]],
               timeout_s: float | None = None) -> list[AsyncIterator[RequestOutput]]:
        """Queue one request's prompts, all or none: raises Overloaded when the queue is full. Each iterator
        yields what each decoding step produced for its prompt until it finishes; closing it early (the
        client went away) takes the prompt out of the batch at the next step."""
        loop = asyncio.get_running_loop()
        weights = [len(ids) + params.max_tokens * params.rows for ids, params in prompts]
        now = time.monotonic()
        with self._lock:
            busy = self._queued_requests > 0
            if busy and (self._queued_requests + len(prompts) > self.limits.requests
                         or self._queued_tokens + sum(weights) > self.limits.tokens):
                raise Overloaded(f"The server is busy: {self._queued_requests} requests are waiting for "
                                 f"'{self.name}'. Retry shortly.", retry_after=self._retry_after())
            self._queued_requests += len(prompts)
            self._queued_tokens += sum(weights)
        subs = [_Submission(f"{self.name}-{next(self._ids)}", ids, params, loop, asyncio.Queue(), w,
                            now + timeout_s if timeout_s else None, now + self.limits.wait_s)
                for (ids, params), w in zip(prompts, weights)]
        for sub in subs:
            self._inbox.put(("add", sub))
        return [self._results(sub) for sub in subs]

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        """One prompt (see `submit`)."""
        async for item in self.submit([(prompt_ids, params)])[0]:
            yield item

    async def _results(self, sub: _Submission) -> AsyncIterator[RequestOutput]:
        done = False
        try:
            while True:
                item = await sub.out.get()
                if isinstance(item, BaseException):
                    done = True  # the engine has already let it go
                    raise item
                yield item
                if item.finished:
                    done = True
                    return
        finally:
            if not done:  # the client went away, or the consumer stopped early
                self._inbox.put(("abort", sub.id))

    def _retry_after(self) -> int:
        return max(1, min(30, math.ceil(self._queued_requests / max(1, self.max_rows))))

    def _dequeue(self, sub: _Submission) -> None:
        if sub.queued:
            sub.queued = False
            with self._lock:
                self._queued_requests -= 1
                self._queued_tokens -= sub.tokens

    # ----------------------------------------------------------------------------- engine thread

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        torch.set_num_threads(self.threads)  # per thread: see COMPUTE_THREADS
        while not self._stop.is_set():
            self._drain(block=not self.batcher.has_work and not self._pending)
            self._expire()
            self._admit()
            if not self.batcher.has_work:
                continue
            try:
                outputs = self.batcher.step()
                self.steps += 1
            except Exception as e:  # a model error fails the requests in the batch, not the server
                log.exception("decoding step failed for %s", self.name)
                for sub in list(self._running.values()):
                    self.batcher.abort(sub.id)
                    self._send(sub, GenerationError(f"generation failed: {type(e).__name__}"))
                self._running.clear()
                continue
            if self.metrics:
                self.metrics.batch_size.labels(self.name).observe(self.batcher.num_rows or 1)
            for out in outputs:
                sub = self._running.get(out.request_id)
                if sub is None:
                    continue
                self._send(sub, GenerationError(out.error) if out.error else out)  # that request only
                if out.finished:
                    del self._running[out.request_id]
            self._gauges()

    def _drain(self, block: bool) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if item is None:
                return
            action, arg = item
            if action == "add":
                self._pending.append(arg)
            else:  # abort
                for sub in [s for s in self._pending if s.id == arg]:
                    self._dequeue(sub)
                self._pending = [s for s in self._pending if s.id != arg]
                if self._running.pop(arg, None) is not None:
                    self.batcher.abort(arg)

    def _expire(self) -> None:
        """Refuse requests that waited too long to join, and stop those running past their deadline."""
        now = time.monotonic()
        for sub in [s for s in self._pending if s.queue_deadline is not None and now > s.queue_deadline]:
            self._pending.remove(sub)
            self._dequeue(sub)
            self._send(sub, Overloaded(f"The request waited more than {self.limits.wait_s:g} s for '{self.name}'; "
                                       "the server is busy. Retry shortly.", retry_after=self._retry_after()))
        for sub in [s for s in self._running.values() if s.deadline is not None and now > s.deadline]:
            del self._running[sub.id]
            self.batcher.abort(sub.id)
            self._send(sub, DeadlineExceeded("The request ran past the server's time limit and was stopped."))

    def _admit(self) -> None:
        """Move pending requests into the batcher while the batch has room (one too big request always runs)."""
        rows = self.batcher.num_rows + sum(r.params.rows for r in self.batcher.waiting)
        while self._pending and (rows + self._pending[0].params.rows <= self.max_rows or not self._running):
            sub = self._pending.pop(0)
            self._dequeue(sub)
            try:
                self.batcher.add(sub.id, sub.prompt_ids, sub.params)
            except Exception as e:
                self._send(sub, e)
                continue
            self._running[sub.id] = sub
            rows += sub.params.rows
        self._gauges()

    def _gauges(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.name).set(len(self._pending))
            self.metrics.running.labels(self.name).set(self.batcher.num_rows)

    @staticmethod
    def _send(sub: _Submission, item) -> None:
        try:
            sub.loop.call_soon_threadsafe(sub.out.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass
