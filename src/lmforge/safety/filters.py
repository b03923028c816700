"""Filter policies: what the server (per API key) and the bots (per bot) do with the text going into and
coming out of a model. Pure data and decisions; storing them is `safety/policies.py`.

A policy file (YAML or JSON):

    input:   {actions: {hate: block, harassment: flag}, thresholds: {harassment: 0.8}}
    output:  {actions: block}          # or null: no output moderation
    refusal_message: Sorry, I can't help with that.   # default for both directions
    redact_output: true                # replace PII in completions by [EMAIL], [PHONE], ...
    watermark: true                    # green-list watermark on every generation of this key
    redact_conversations: true         # bots: store conversations with PII redacted (the default)

Each of `input` and `output` is a moderation `Policy` (actions block / flag / allow per category, optional
thresholds, its own refusal message). Without a stored policy, both directions only *flag*: moderation
runs (about 10 ms a text) so the audit log and the dashboard counts see it, and nothing is changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .moderation import (
    ACTIONS,
    Decision,
    ModerationError,
    ModerationModel,
    Policy,
    Result,
    default_model,
)
from .pii import redact

FIELDS = ("input", "output", "refusal_message", "redact_output", "watermark", "redact_conversations")


class PolicyError(ValueError):
    """A filter policy that does not validate; the message names the field."""


@dataclass
class FilterPolicy:
    input: Policy | None = field(default_factory=Policy)
    output: Policy | None = field(default_factory=Policy)
    redact_output: bool = False
    watermark: bool = False
    redact_conversations: bool = True

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "policy") -> "FilterPolicy":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise PolicyError(f"{where}: a filter policy must be a mapping with keys {', '.join(FIELDS)}")
        unknown = sorted(set(d) - set(FIELDS))
        if unknown:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(FIELDS)}")
        refusal = d.get("refusal_message")
        sides = {}
        for side in ("input", "output"):
            value = d.get(side, {})
            if value is None:
                sides[side] = None
                continue
            if isinstance(value, str):  # "block": one action for every category
                value = {"actions": value}
            if isinstance(value, dict) and refusal is not None:
                value = {"refusal_message": refusal, **value}
            try:
                sides[side] = Policy.from_dict(value)
            except ModerationError as e:
                raise PolicyError(f"{where}: {side}: {e}") from None
        flags = {}
        for name in ("redact_output", "watermark", "redact_conversations"):
            if name in d:
                if not isinstance(d[name], bool):
                    raise PolicyError(f"{where}: {name} must be true or false, got {d[name]!r}")
                flags[name] = d[name]
        if refusal is not None and (not isinstance(refusal, str) or not refusal.strip()):
            raise PolicyError(f"{where}: refusal_message must be a non-empty string")
        return cls(sides["input"], sides["output"], **flags)

    def to_dict(self) -> dict:
        def side(p: Policy | None):
            return None if p is None else {"actions": p.actions, "thresholds": p.thresholds,
                                           "refusal_message": p.refusal_message}

        return {"input": side(self.input), "output": side(self.output), "redact_output": self.redact_output,
                "watermark": self.watermark, "redact_conversations": self.redact_conversations}


def build_policy(path: str | Path | None = None, *, base: FilterPolicy | None = None, input: str | None = None,
                 output: str | None = None, refusal_message: str | None = None, redact_output: bool | None = None,
                 watermark: bool | None = None, redact_conversations: bool | None = None) -> FilterPolicy | None:
    """A policy from a file (or else `base`, e.g. the stored one) with command-line style overrides
    (`input`/`output`: block, flag, allow for every category, or off); None when given nothing, meaning
    the default policy."""
    data = base.to_dict() if base is not None and path is None else {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise PolicyError(f"cannot read policy {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise PolicyError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise PolicyError(f"{path}: a filter policy must be a mapping with keys {', '.join(FIELDS)}")
    for side, value in (("input", input), ("output", output)):
        if value is not None:
            if value not in (*ACTIONS, "off"):
                raise PolicyError(f"--{side} must be block, flag, allow or off, got {value!r}")
            data[side] = None if value == "off" else value
    if refusal_message is not None:  # the option wins over the sides' own messages
        data.update({side: {**data[side], "refusal_message": refusal_message} for side in ("input", "output")
                     if isinstance(data.get(side), dict)})
    overrides = dict(refusal_message=refusal_message, redact_output=redact_output, watermark=watermark,
                     redact_conversations=redact_conversations)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if path is None and base is None and not changes and input is None and output is None:
        return None
    data.update(changes)
    return FilterPolicy.from_dict(data, where=str(path) if path is not None else "policy options")


def allowed() -> Decision:
    """The decision when nothing was screened (no policy, no text)."""
    return Decision("allow", Result(False, {}, {}))


def screen(texts: list[str], policy: Policy | None, model: ModerationModel | None = None) -> Decision:
    """Moderate several texts (a prompt list, a chat's messages) as one: the strongest action any of them
    draws wins, reported with the scores of the text that drew it. No policy: allowed, nothing scored."""
    texts = [t for t in texts if t and t.strip()]
    if policy is None or not texts:
        return allowed()
    model = model or default_model()
    worst: Decision | None = None
    for result in model.moderate(texts, policy.thresholds):
        fired = [policy.actions.get(c, "flag") for c, hit in result.categories.items() if hit]
        action = min(fired, key=ACTIONS.index) if fired else "allow"
        if worst is None or ACTIONS.index(action) < ACTIONS.index(worst.action):
            worst = Decision(action, result, policy.refusal_message if action == "block" else None)
    return worst


@dataclass
class Filtered:
    """A completion after the output filter: the text to send, and what happened to it."""

    text: str
    decision: Decision
    pii: dict[str, int]  # entity type -> count redacted

    @property
    def blocked(self) -> bool:
        return self.decision.blocked


def filter_output(text: str, policy: FilterPolicy, model: ModerationModel | None = None) -> Filtered:
    """Moderate a completion (blocked: the text becomes empty, the caller reports `content_filter`) and,
    when the policy says so, redact the PII in what is left."""
    decision = screen([text], policy.output, model)
    if decision.blocked:
        return Filtered("", decision, {})
    if not policy.redact_output:
        return Filtered(text, decision, {})
    r = redact(text)
    return Filtered(r.text, decision, dict(r.counts))


def summary(decision: Decision) -> dict:
    """What the audit log and the event counts keep of a decision: the action and the categories that fired."""
    return {"action": decision.action, "categories": sorted(c for c, hit in decision.result.categories.items() if hit)}
