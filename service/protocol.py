"""OpenAI-compatible wire models (pydantic only, no I/O).

Requests accept unknown fields (the OpenAI SDK's ``extra_body``) and ignore them; the fields we do
read are validated here, including cross-field rules, and ``to_engine_params()`` maps a request
to the engine's ``SamplingParams``. Responses add one optional field, ``safety``, which carries
the guard's verdict in ``annotate`` mode.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.config import Action
from service.engines.base import SamplingParams
from service.settings import DEFAULT_MAX_TOKENS, MAX_CHARS, MAX_MESSAGES, MAX_TOKENS


class _Open(BaseModel):
    """Request-side base: unknown fields are accepted (and ignored)."""

    model_config = ConfigDict(extra="allow")


# --- Request ----------------------------------------------------------------------------------


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePartParam(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePartParam, Field(discriminator="type")]


class ChatMessageParam(_Open):
    """One message; ``developer`` is OpenAI's new name for ``system`` and is treated as such."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_rules(self) -> ChatMessageParam:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if isinstance(self.content, list):
            if not self.content:
                raise ValueError("content must not be an empty list")
            has_image = any(isinstance(p, ImagePartParam) for p in self.content)
            if has_image and self.role != "user":
                raise ValueError("image_url parts are only allowed in user messages")
        return self

    def text_chars(self) -> int:
        if isinstance(self.content, str):
            return len(self.content)
        return sum(len(p.text) for p in self.content or () if isinstance(p, TextPart))


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    model: str | None = None
    messages: list[ChatMessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop accepts at most 4 sequences")
        if sum(m.text_chars() for m in self.messages) > MAX_CHARS:
            raise ValueError(f"messages hold more than {MAX_CHARS} characters of text")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be an assistant message")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_engine_params(self, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> SamplingParams:
        """Engine sampling parameters; unset fields take OpenAI's defaults."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
        )


# --- Safety verdict ---------------------------------------------------------------------------


class TaskVerdict(BaseModel):
    """The classifier's answer for the prompt or the response."""

    flagged: bool
    unsafe_prob: float
    categories: dict[str, float] = Field(default_factory=dict)  # fired taxonomy nodes only


class SafetyVerdict(BaseModel):
    """What the guard decided for one request; ``action`` is what it did about it."""

    action: Action
    prompt: TaskVerdict | None = None
    response: TaskVerdict | None = None


# --- Responses --------------------------------------------------------------------------------


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    safety: SafetyVerdict | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None


class ChatCompletionStreamChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    safety: SafetyVerdict | None = None


# --- Errors and models ------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "spa-guard"
    random_weights: bool = False
    guard: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- Moderations (OpenAI's /v1/moderations) ---------------------------------------------------


class ModerationRequest(_Open):
    """``input``: one string, a list of strings (one result each), or a list of text/image parts
    (one result for the whole list). Limits on counts and sizes are checked by the handler."""

    input: str | list[str] | list[ContentPart]
    model: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("input must not be empty")
        elif not value:
            raise ValueError("input must not be an empty list")
        elif any(isinstance(x, str) and not x.strip() for x in value):
            raise ValueError("input strings must not be empty")
        return value


InputType = Literal["text", "image"]
"""What a moderation result was scored on (OpenAI's ``category_applied_input_types`` values)."""


class ModerationResult(BaseModel):
    """One moderated input: OpenAI's fields over its 13 category names, plus ``spa_vl``, the
    classifier's own verdict (fired SPA-VL taxonomy nodes and their probabilities)."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[InputType]]
    spa_vl: TaskVerdict


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
