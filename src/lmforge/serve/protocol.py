"""OpenAI request and response models, fields in the order of OpenAI's API reference.

Requests validate ranges here, so a bad value answers 400 naming the parameter before any work starts.
Unknown request fields are ignored (clients send newer fields than this server knows). Types are strict, as
JSON has them (`"stream": "yes"` is a 400, not true), and no text may hold a lone surrogate (`"\ud800"` is
valid JSON but not Unicode that can be encoded, tokenized or logged). A request turns itself into the
engine's `SamplingParams` in one place, `SamplingFields.to_sampling_params`."""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from ..generate import SamplingParams
from ..generate.sampling import SamplingError
from .errors import APIError, ParamError

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes: 64 bits, signed or not

from .cards import ModelFacts


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def invalid_text(value: Any, path: str = "") -> str | None:
    """The path ('messages[0].content', '' for `value` itself) of the first string, or dict key, in `value`
    that is not valid Unicode (a lone surrogate); None when all text is valid."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and invalid_text(k) is not None:
                return path
            if (bad := invalid_text(v, sub)) is not None:
                return bad
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if (bad := invalid_text(v, f"{path}[{i}]")) is not None:
                return bad
    return None


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data):
        bad = invalid_text(data)
        if bad is not None:
            raise ParamError(bad or None, "contains invalid Unicode (a lone surrogate); send UTF-8 text")
        return data


# ------------------------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ------------------------------------------------------------------------------------------- shared


class StreamOptions(Request):
    include_usage: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class SamplingFields(Request):
    """What completions and chat completions share."""

    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # not OpenAI's; vLLM and others accept it
    # lmforge's beam search (T5 and GPT-2 models): the n best of num_beams beams, as transformers' generate
    num_beams: int = Field(1, ge=1, le=16)
    length_penalty: float = Field(1.0, ge=-10, le=10)  # beyond, length ** penalty under/overflows
    early_stopping: bool | str = False
    user: str | None = None
    watermark: bool = False  # lmforge's: true asks for the green-list watermark (a key's policy may also force it)
    check_copying: bool = False  # lmforge's: report each choice's longest verbatim overlap with the server's corpus

    def to_sampling_params(self, *, prompt_len: int, prompt_param: str, context: int, vocab: int,
                           max_tokens: int | None, logprobs: int | None, beams: bool, model: str,
                           extra_stop: list[str] = (), processors: tuple = ()) -> SamplingParams:
        """The engine's settings for one prompt of `prompt_len` tokens on a model with `context` positions and
        `vocab` tokens (`beams`: whether it can beam-search): every check that needs the model, with errors
        that name their parameter."""
        if prompt_len >= context:
            raise APIError(400, f"This model's maximum context length is {context} tokens, but the prompt has "
                                f"{prompt_len} tokens. Shorten the prompt.", param=prompt_param,
                           code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = context - prompt_len
        elif prompt_len + max_tokens > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens, but you requested "
                                f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the "
                                "completion). Reduce max_tokens or the prompt.", param="max_tokens",
                           code="context_length_exceeded")
        bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        bad = [t for t in bias if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"Invalid value for 'logit_bias': token id {bad[0]} is outside the vocabulary (0 to "
                                f"{vocab - 1}).", param="logit_bias", code="invalid_value")
        if self.num_beams > 1 and not beams:
            raise APIError(400, f"Invalid value for 'num_beams': beam search is not supported for '{model}'.",
                           param="num_beams", code="unsupported_parameter")
        try:
            return SamplingParams(
                max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty, logit_bias=bias,
                stop=list(self.stop or []) + list(extra_stop), n=self.n, seed=self.seed, logprobs=logprobs,
                extra_processors=processors, num_beams=self.num_beams, length_penalty=self.length_penalty,
                early_stopping=self.early_stopping,
            )
        except SamplingError as e:  # settings that conflict (beam search with sampling settings)
            raise APIError(400, f"Invalid value for '{e.param}': {e}.", param=e.param, code="invalid_value") from None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        v = [v] if isinstance(v, str) else v
        if v is not None and len(v) > 4:
            raise ValueError("takes at most 4 stop sequences")
        return v

    @field_validator("early_stopping")
    @classmethod
    def _early_stopping(cls, v):
        if v not in (True, False, "never"):
            raise ValueError('must be true, false or "never"')
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        for token, value in (v or {}).items():
            if not token.lstrip("-").isdigit():
                raise ValueError(f"keys must be token ids, got {token!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"values must be between -100 and 100, got {value} for token {token}")
        return v


# -------------------------------------------------------------------------------------- completions


class CompletionRequest(SamplingFields):
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    best_of: int | None = Field(None, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    max_tokens: int | None = Field(16, ge=1)
    suffix: str | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CopyingField(BaseModel):
    """lmforge's `copying` on a choice (safety/copying.py's report), present only when the request asked."""

    copying: dict | None = None

    @model_serializer(mode="wrap")
    def _only_when_checked(self, handler):
        d = handler(self)
        if d.get("copying") is None:
            d.pop("copying", None)
        return d


class CompletionChoice(CopyingField):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# --------------------------------------------------------------------------------- chat completions


class TextPart(Request):
    type: Literal["text"]
    text: str


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatChoice(CopyingField):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


# --------------------------------------------------------------------------------------- embeddings


class EmbeddingRequest(Request):
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# ------------------------------------------------------------------------------------ models, usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lmforge"
    max_model_len: int | None = None  # as vLLM reports it
    metadata: ModelFacts | None = None  # an lmforge extension: what the model is, its size and limits


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class UsageRow(BaseModel):
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float


class UsageReport(BaseModel):
    object: Literal["usage_report"] = "usage_report"
    key: str
    start: int | None
    end: int | None
    data: list[UsageRow]
    total_cost_usd: float


class ModerationRequest(Request):
    """POST /v1/moderations (the response is safety.moderation's OpenAI-shaped dict)."""

    input: str | list[str]
    model: str | None = None
