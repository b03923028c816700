"""How a bot answers one message: the intent matcher, then the knowledge base, then (optionally) a
generative model conditioned on the bot's purpose, then the fallback answer. Pure: no database, no HTTP."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from fastapi.concurrency import run_in_threadpool

from .knowledge import KnowledgeIndex, Reader, format_answer
from .matcher import Matcher, loads


@dataclass
class Brain:
    """What training produced for one bot, plus the answers of its intents."""

    matcher: Matcher | None
    knowledge: KnowledgeIndex | None
    answers: dict[str, str] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def from_blob(cls, blob: bytes, version: int) -> "Brain":
        a = loads(blob)
        matcher = Matcher.from_arrays(a) if "vectors" in a and len(a["vectors"]) else None
        knowledge = KnowledgeIndex.from_arrays(a) if "kb_vectors" in a and len(a["kb_vectors"]) else None
        answers = dict(zip((str(s) for s in a.get("answer_intents", [])), (str(s) for s in a.get("answer_texts", []))))
        return cls(matcher, knowledge, answers, version)


@dataclass
class Reply:
    text: str
    source: str  # intent, document, generative, fallback
    intent: str | None = None
    document: str | None = None
    confidence: float = 0.0
    example: str | None = None
    latency_ms: float = 0.0


@dataclass
class BotConfig:
    purpose: str
    fallback: str
    threshold: float
    generative_model: str | None = None


Generate = Callable[[str, str, str], Awaitable[str | None]]
"""(model, purpose, question) -> generated answer, or None if the model is not available."""


def understand(brain: Brain | None, embedder, text: str, threshold: float,
               reader: Reader | None = None) -> Reply | None:
    """The matcher's or the knowledge base's answer (read by `reader` when given), or None when neither is
    confident."""
    if brain is None or (brain.matcher is None and brain.knowledge is None):
        return None
    q = embedder.encode([text])[0]
    best = None
    if brain.matcher is not None:
        tuned = brain.matcher.encoder  # a bot with its own fine-tuned encoder matches in that encoder's space
        m = brain.matcher.match(tuned.encode([text])[0] if tuned is not None else q, text)
        if m.intent is not None:
            best = Reply(brain.answers.get(m.intent, ""), "intent", m.intent, None, m.confidence, m.example)
            if m.confidence >= threshold and best.text:
                return best
    if brain.knowledge is not None:
        hit = brain.knowledge.answer(text, q, reader)
        if hit is not None:
            return Reply(format_answer(hit), "document", None, hit.document, hit.similarity)
    if best is not None:  # keep what the matcher guessed, for the test panel and the monitor
        return Reply("", "fallback", best.intent, None, best.confidence, best.example)
    return None


async def respond(config: BotConfig, brain: Brain | None, embedder, text: str,
                  generate: Generate | None = None, reader: Reader | None = None) -> Reply:
    start = time.perf_counter()
    reply = await run_in_threadpool(understand, brain, embedder, text, config.threshold, reader)
    if reply is None or reply.source == "fallback":
        guess = reply
        reply = None
        if config.generative_model and generate is not None:
            out = await generate(config.generative_model, config.purpose, text)
            if out:
                reply = Reply(out.strip(), "generative", confidence=0.0)
        if reply is None:
            reply = Reply(config.fallback, "fallback")
        if guess is not None:  # what the matcher thought, shown in the test panel
            reply.intent, reply.confidence, reply.example = guess.intent, guess.confidence, guess.example
    reply.latency_ms = (time.perf_counter() - start) * 1000
    return reply
