"""The serving engine: one background thread per generative model runs a continuous `Batcher`;
HTTP handlers submit requests and read their token deltas from an asyncio queue.

Requests join the running batch at the next decoding step (if the batch has room for their rows: n choices,
or num_beams beams) and leave when they finish or their client goes away."""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import AsyncIterator

import torch

from ..generate import Batcher, RequestOutput, SamplingParams
from .metrics import Metrics

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- engine


@dataclass
class _Submission:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue


class Engine:
    """Runs a Batcher in a thread. `generate()` is the async face: an iterator of RequestOutputs."""

    def __init__(self, name: str, model, tokenizer, metrics: Metrics | None = None, max_rows: int = 64,
                 stop_ids: frozenset[int] = frozenset()):
        self.name = name
        self.batcher = Batcher(model, tokenizer, stop_ids)
        self.metrics = metrics
        self.max_rows = max_rows
        self._inbox: queue.Queue = queue.Queue()
        self._pending: list[_Submission] = []
        self._running: dict[str, _Submission] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout=10)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield what each decoding step produced for it, until it finishes."""
        loop = asyncio.get_running_loop()
        sub = _Submission(f"{self.name}-{next(self._ids)}", prompt_ids, params, loop, asyncio.Queue())
        self._inbox.put(("add", sub))
        done = False
        try:
            while True:
                item = await sub.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    done = True
                    return
        finally:
            if not done:  # the client went away, or the consumer stopped early
                self._inbox.put(("abort", sub.id))

    # ----------------------------------------------------------------------------- engine thread

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            self._drain(block=not self.batcher.has_work and not self._pending)
            self._admit()
            if not self.batcher.has_work:
                continue
            try:
                outputs = self.batcher.step()
            except Exception as e:  # a model error fails the requests in the batch, not the server
                log.exception("decoding step failed for %s", self.name)
                for sub in list(self._running.values()):
                    self.batcher.abort(sub.id)
                    self._send(sub, RuntimeError(f"generation failed: {type(e).__name__}"))
                self._running.clear()
                continue
            if self.metrics:
                self.metrics.batch_size.labels(self.name).observe(self.batcher.num_rows or 1)
            for out in outputs:
                sub = self._running.get(out.request_id)
                if sub is None:
                    continue
                self._send(sub, out)
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
                self._pending = [s for s in self._pending if s.id != arg]
                if self._running.pop(arg, None) is not None:
                    self.batcher.abort(arg)

    def _admit(self) -> None:
        """Move pending requests into the batcher while the batch has room (one too big request always runs)."""
        rows = self.batcher.num_rows + sum(r.params.rows for r in self.batcher.waiting)
        while self._pending and (rows + self._pending[0].params.rows <= self.max_rows or not self._running):
            sub = self._pending.pop(0)
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
