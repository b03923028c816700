"""The safety layer of a bot's turn, for bots/service.py: the bot's filter policy (safety/filters.py) screens
the question and the answer, blocked and flagged texts are counted (safety/policies.py), the turn goes to
the audit log when one is given, and `stored()` is what the conversation store keeps: PII redacted unless
the bot's policy sets `redact_conversations: false`.

    guard = BotGuard.load(db, bot.id, audit)      # blocking calls: run them in a thread from async code
    refusal = guard.screen_input(question)        # the refusal message when the question is blocked
    answer = guard.screen_output(question, answer, model)   # refusal if blocked, PII redacted if asked
    Message(question=guard.stored(question), answer=guard.stored(answer), ...)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..store import Database
from .audit_log import AuditLog
from .filters import FilterPolicy, allowed, filter_output, screen, summary
from .moderation import Decision
from .pii import redact_text
from .policies import get_policy, record_events


@dataclass
class BotGuard:
    db: Database
    bot_id: int
    policy: FilterPolicy
    audit: AuditLog | None = None
    input: Decision = field(default_factory=allowed)
    output: Decision = field(default_factory=allowed)

    @classmethod
    def load(cls, db: Database, bot_id: int, audit: AuditLog | None = None) -> "BotGuard":
        return cls(db, bot_id, get_policy(db, bot_id=bot_id), audit)

    @property
    def blocked(self) -> bool:
        return self.input.blocked or self.output.blocked

    def screen_input(self, question: str) -> str | None:
        """The refusal message when the bot's input policy blocks the question (answer it with that, and
        skip the matcher and the model); None otherwise."""
        self.input = screen([question], self.policy.input)
        return self.input.message if self.input.blocked else None

    def screen_output(self, question: str, answer: str, model: str | None = None) -> str:
        """The answer to send: the output policy's refusal when blocked, PII redacted when the policy asks.
        Counts what was blocked or flagged and writes the audit record (once per turn)."""
        sent = answer
        if not self.input.blocked:
            f = filter_output(answer, self.policy)
            self.output = f.decision
            sent = self.policy.output.refusal_message if f.blocked else f.text
        record_events(self.db, {"input": self.input, "output": self.output}, bot_id=self.bot_id)
        if self.audit is not None:
            self.audit.log_generation(model=model or "bot", bot=str(self.bot_id), prompt=question,
                                      completion=answer, moderation={"input": summary(self.input),
                                                                     "output": [summary(self.output)]})
        return sent

    def stored(self, text: str) -> str:
        """What the conversation store keeps of a question or an answer."""
        return redact_text(text) if self.policy.redact_conversations else text
