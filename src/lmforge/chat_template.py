"""Chat templates: how a list of messages becomes the text a model continues, rendered the Hugging Face way.

A model's own template (the Jinja `chat_template` of its tokenizer_config.json, a `chat_template.jinja` file,
or a GGUF file's `tokenizer.chat_template`) is rendered exactly as transformers' `apply_chat_template` renders
it (`transformers/utils/chat_template_utils.py`): a sandboxed Jinja environment with `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that keeps non-ASCII text, and the globals
`raise_exception` and `strftime_now`; the variables are `messages`, `add_generation_prompt`, `tools`,
`documents` and the tokenizer's special tokens (`bos_token`, `eos_token`, …). So the prompt's token ids are
the ones the model saw in training.

Models without a template of their own (the demo models, base models) fall back to the small YAML
templates in `chat_templates.yaml`, picked by family.

Where a turn ends: a template closes each assistant turn with a special token (`<|im_end|>`, `<|eot_id|>`,
`<end_of_turn>`, `</s>`). Rendering a probe conversation and reading the special token right after the
probe reply finds it for any template, so decoding can stop on it (`end_of_turn_ids`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict

from .models import ModelError

FALLBACKS = Path(__file__).with_name("chat_templates.yaml")


class ChatTemplateError(ModelError):
    """A template that raised (its own `raise_exception`, or a Jinja error) while rendering a conversation."""


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


_ENV = _environment()


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@dataclass
class ChatTemplate:
    """A Jinja chat template with the special tokens it may refer to.

    `stop`: strings that end the assistant's turn for templates whose turns end in plain text (the YAML
    fallbacks); templates that close a turn with a special token stop on its id instead (`end_of_turn_ids`).
    """

    source: str
    description: str = ""
    stop: list[str] = field(default_factory=list)
    special_tokens: dict[str, str] = field(default_factory=dict)  # e.g. {"bos_token": "<s>", ...}
    name: str = "model"  # whose template, for error messages

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None,
               documents: list[dict] | None = None, **extra) -> str:
        """The prompt text for `messages` (each a dict with `role` and `content`, and whatever else the
        template reads, e.g. `tool_calls`). A template that raises becomes one ChatTemplateError sentence."""
        try:
            return _compile(self.source).render(
                messages=messages, add_generation_prompt=add_generation_prompt, tools=tools, documents=documents,
                **self.special_tokens, **extra)
        except jinja2.exceptions.TemplateError as e:
            raise ChatTemplateError(f"the chat template of {self.name} refused the conversation: {e}") from None
        except Exception as e:  # a template bug (a bad attribute, a type error): still one sentence, no trace
            raise ChatTemplateError(
                f"the chat template of {self.name} failed: {type(e).__name__}: {e}") from None

    def end_of_turn_ids(self, tokenizer) -> list[int]:
        """The special token(s) the template puts right after an assistant reply, as ids; [] if none."""
        probe = "\ue000probe\ue000"  # a private-use marker no template or tokenizer treats specially
        try:
            text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
                               add_generation_prompt=False)
        except ChatTemplateError:
            return []
        after = text[text.rfind(probe) + len(probe):] if probe in text else ""
        specials = _special_tokens(tokenizer)
        for token in sorted(specials, key=len, reverse=True):  # the longest special token that opens `after`
            if token and after.startswith(token):
                return [specials[token]]
        return []


def _special_tokens(tokenizer) -> dict[str, int]:
    """Every special token of the tokenizer (its added tokens marked special), text -> id."""
    return {t.content: i for i, t in tokenizer.backend.get_added_tokens_decoder().items() if t.special}


class _Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str
    stop: list[str] = []
    description: str = ""


class _Fallbacks(BaseModel):
    """The schema of chat_templates.yaml."""

    model_config = ConfigDict(extra="forbid")
    templates: dict[str, _Fallback]
    families: dict[str, str]


@lru_cache(maxsize=4)
def _fallbacks(path: Path = FALLBACKS) -> _Fallbacks:
    try:
        data = _Fallbacks.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except Exception as e:
        raise ModelError(f"{path}: not a valid chat-template file ({e})") from None
    for family, name in data.families.items():
        if name not in data.templates:
            raise ModelError(f"{path}: family {family} names an unknown template {name!r}")
    return data


def template_for(tokenizer, family: str, name: str = "model") -> ChatTemplate:
    """The chat template to serve a model with: its own (`tokenizer.chat_template`, read from
    tokenizer_config.json, chat_template.jinja or GGUF metadata) if it has one, else the YAML fallback of its
    family."""
    specials = {f"{k}_token": v for k, v in getattr(tokenizer, "special_tokens", {}).items()}
    own = getattr(tokenizer, "chat_template", None)
    if own is not None and own.strip():
        try:
            _compile(own)
        except jinja2.exceptions.TemplateSyntaxError as e:
            raise ModelError(f"the chat template of {name} is not valid Jinja (line {e.lineno}: {e.message})") from None
        return ChatTemplate(own, "the model's own chat template", [], specials, name)
    fallbacks = _fallbacks()
    fb = fallbacks.templates[fallbacks.families.get(family, "plain")]
    return ChatTemplate(fb.template, fb.description, list(fb.stop), specials, name)


def end_of_sequence_ids(model, tokenizer, template: ChatTemplate | None) -> frozenset[int]:
    """The tokens that end a completion: the tokenizer's end of sequence, every `eos_token_id` of the model's
    config (Llama 3 lists several) that the tokenizer holds as a special token (a config written for another
    vocabulary must not stop on an ordinary word), and the token the chat template closes an assistant turn
    with."""
    config_eos = getattr(model.config, "eos_token_id", None)
    config_eos = set(config_eos if isinstance(config_eos, list) else [config_eos]) & set(_special_tokens(tokenizer).values())
    turn = template.end_of_turn_ids(tokenizer) if template is not None else []
    return frozenset(i for i in {tokenizer.eos_token_id, *config_eos, *turn} if i is not None)
