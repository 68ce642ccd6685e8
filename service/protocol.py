"""OpenAI-compatible wire models (pydantic only, no I/O).

A request field outside the API (the OpenAI SDK's ``extra_body``, a vendor's parameter) is a 400
``unknown_parameter`` naming it in ``param``, as OpenAI answers an unrecognized argument: never ignored,
never forwarded to an upstream (a vendor field such as vLLM's ``chat_template`` would put unscored text
before the model). Before that check, unknown fields count against ``MAX_EXTRA_CHARS``.
Every optional OpenAI parameter is listed in ``OPTIONAL_PARAMS`` with its "not used" values;
``requested_params()`` says which a request asks for, and serving refuses (400 naming it) any the
engine's capabilities lack (``service.engines.capabilities``), so none is ever ignored. The fields we
do read are validated strictly (no "5" for 5, no 1 for true), including cross-field rules (their
errors name the field), and ``to_engine_params()`` maps a request to the engine's ``SamplingParams``.
``CompletionRequest`` is ``/v1/completions``'. Responses follow the ``openai`` package's types and add
``safety`` (the guard's verdict in ``annotate`` mode) and, where there is reasoning text,
``reasoning_content``.

Before any field is read, ``check_body`` walks the raw JSON once (``_Request``'s validator):
* every string, keys included, must be encodable Unicode: a lone surrogate (JSON ``"\ud800"``)
  is a 400 here and never reaches the classifier, where it would fail as a guard error;
* nesting deeper than ``MAX_JSON_DEPTH`` is a 400;
* everything except image data is capped: ``MAX_NON_IMAGE_CHARS`` for the whole body and
  ``MAX_EXTRA_CHARS`` for unknown fields (413, error type ``payload_too_large``); single fields
  have their own caps (``MAX_STOP_CHARS``, ``MAX_USER_CHARS``, ``MAX_NAME_CHARS``, ...: 400).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from service.config import Action
from service.engines.base import SamplingParams
from service.settings import (
    DEFAULT_MAX_TOKENS,
    MAX_CHARS,
    MAX_CONTENT_PARTS,
    MAX_EXTRA_CHARS,
    MAX_JSON_DEPTH,
    MAX_MESSAGES,
    MAX_MODEL_CHARS,
    MAX_NAME_CHARS,
    MAX_NON_IMAGE_CHARS,
    MAX_STOP_CHARS,
    MAX_TOKENS,
    MAX_URL_CHARS,
    MAX_USER_CHARS,
)

TOO_LARGE = "payload_too_large"
"""The pydantic error type ``service.errors`` answers with 413 instead of 400."""
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # OpenAI's seed is an int64; engines seed torch/vLLM with it


class _Open(BaseModel):
    """Request-side base: strict fields, and an unknown field is a 400 naming it (never ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True)


MAX_PARAM_NAME_CHARS = 64  # an unknown field's name is echoed in ``param`` cut to this


def param_name(key: str) -> str:
    """A client's field name as an error may echo it: cut to ``MAX_PARAM_NAME_CHARS``."""
    return key if len(key) <= MAX_PARAM_NAME_CHARS else key[: MAX_PARAM_NAME_CHARS - 3] + "..."


class _Request(_Open):
    """A request body: ``check_body`` runs on the raw JSON before any field is validated.

    ``extra_params``: OpenAI parameters this endpoint takes without a typed field (kept in
    ``model_extra`` for the capability check, which honours or refuses each); any other key outside the
    fields is a 400 ``unknown_parameter`` naming it, as OpenAI answers an unrecognized argument.
    """

    # extra="allow" only so that ``extra_params`` land in model_extra; _check_raw refuses every other key.
    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={"additionalProperties": False})
    extra_params: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _check_raw(cls, data: Any) -> Any:
        check_body(data)
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields and key not in cls.extra_params:
                    raise PydanticCustomError(
                        "unknown_parameter", "unknown parameter: not one this endpoint takes",
                        {"param": param_name(str(key))})
        return data


# Every field name of the request models: a key outside this set is an unknown field (its
# subtree counts against MAX_EXTRA_CHARS and its name is never echoed in an error).
_KNOWN_KEYS = frozenset({
    "model", "messages", "role", "content", "name", "type", "text", "image_url", "url", "detail",
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
    "presence_penalty", "frequency_penalty", "stream", "stream_options", "include_usage", "user",
    "input", "tool_calls", "tool_call_id", "id", "function", "arguments", "refusal", "tools",
    "tool_choice", "parallel_tool_calls", "description", "parameters", "strict", "response_format",
    "json_schema", "schema", "logprobs", "top_logprobs", "logit_bias", "reasoning_effort", "metadata",
    "prompt", "echo", "suffix", "best_of",
})
# Known fields whose value is free-form JSON (a JSON schema, a token-id map, tags): the keys inside are
# the client's own, counted against the body's cap like any known field, never as unknown fields.
_OPAQUE_KEYS = frozenset({"parameters", "schema", "logit_bias", "metadata"})
_NODE_CHARS = 8  # what one JSON node (object, array, number, ...) counts against the caps


def _is_image_data(path: tuple[str | int, ...], value: str) -> bool:
    """Image data sits at ``messages.i.content.j.image_url.url`` or ``input.i.image_url.url``."""
    return value.startswith("data:") and path[-2:] == ("image_url", "url") and (
        (len(path) == 6 and path[0] == "messages" and path[2] == "content") or
        (len(path) == 4 and path[0] == "input")
    )


def _where(path: tuple[str | int, ...]) -> str:
    return ".".join(map(str, path)) or "body"


def _encodable(text: str, path: tuple[str | int, ...]) -> None:
    if text.isascii():  # the common case (and all base64), without copying
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "invalid_unicode", "{where}: text holds a lone surrogate or other non-encodable code point",
            {"where": _where(path)},
        ) from None


def check_body(data: Any) -> None:
    """Walk a raw request body once (iteratively: no recursion on deep input); see the module
    docstring. Raises ``PydanticCustomError``; paths name known fields only, never values."""
    total = extra = 0
    # (value, path, under an unknown key, under an opaque key)
    stack: list[tuple[Any, tuple[str | int, ...], bool, bool]] = [(data, (), False, False)]
    while stack:
        value, path, unknown, opaque = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise PydanticCustomError("too_deep", "body: nested deeper than {n} levels",
                                      {"n": MAX_JSON_DEPTH})
        size = _NODE_CHARS
        if isinstance(value, str):
            _encodable(value, path)
            size = 0 if _is_image_data(path, value) else len(value)
        elif isinstance(value, dict):
            for key, child in value.items():
                key = str(key)
                known = (key in _KNOWN_KEYS or opaque) and not unknown
                _encodable(key, path if known else (*path, "<unknown field>"))
                size += len(key)
                stack.append((child, (*path, key) if known else (*path, "<unknown field>"), not known,
                              opaque or (known and key in _OPAQUE_KEYS)))
        elif isinstance(value, list):
            stack.extend((child, (*path, i), unknown, opaque) for i, child in enumerate(value))
        total += size
        extra += size if unknown else 0
        if total > MAX_NON_IMAGE_CHARS:
            raise PydanticCustomError(TOO_LARGE, "body: more than {n} characters besides image data",
                                      {"n": MAX_NON_IMAGE_CHARS})
        if extra > MAX_EXTRA_CHARS:
            raise PydanticCustomError(TOO_LARGE, "body: unknown fields hold more than {n} characters",
                                      {"n": MAX_EXTRA_CHARS})


# Every optional OpenAI chat parameter, with the values that mean "not used". A request that sets one to
# anything else asks for it: the serving engine honours it (its ``capabilities``,
# ``service.engines.capabilities``) or the request is refused (400 naming it), never served as if it had
# not asked. The typed ones are validated here; the others are checked for type by the upstream that
# honours them (the ``openai`` engine passes them on as they are).
OPTIONAL_PARAMS: dict[str, tuple[Any, ...]] = {
    "n": (None, 1), "logprobs": (None, False), "top_logprobs": (None, 0), "logit_bias": (None, {}),
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}), "reasoning_effort": (None,), "metadata": (None, {}),
    "store": (None, False), "service_tier": (None, "auto", "default"), "audio": (None,),
    "modalities": (None, ["text"]), "prediction": (None,), "web_search_options": (None,),
    "functions": (None, []), "function_call": (None, "none", "auto"), "verbosity": (None,),
    "prompt_cache_key": (None,), "safety_identifier": (None,),
}
MAX_CHOICES = 8  # ``n``: each choice is generated and scored in full
MAX_TOOLS = 128  # OpenAI's own limit on ``tools``
MAX_TOOL_CALLS = 64  # tool calls of one assistant turn in a request
MAX_TOOL_ID_CHARS = 256
MAX_LOGIT_BIAS = 1024  # entries of ``logit_bias``
MAX_TOP_LOGPROBS = 20  # OpenAI's range of ``top_logprobs``
MAX_METADATA = 16  # OpenAI's: 16 pairs, keys of 64 characters, values of 512
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for tool (function) names
MAX_PROMPTS = 8  # /v1/completions: prompts of one request (each is generated n times)
COMPLETION_MAX_TOKENS = 16  # /v1/completions' default max_tokens (OpenAI's)
# /v1/completions parameters no engine here honours, with their "not used" values.
COMPLETION_REFUSED: dict[str, tuple[Any, ...]] = {"logprobs": (None,), "suffix": (None, ""), "best_of": (None, 1)}


# --- Request ----------------------------------------------------------------------------------


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _url_cap(cls, url: str) -> str:
        if not url.startswith("data:") and len(url) > MAX_URL_CHARS:
            raise ValueError(f"image URLs other than data: URLs hold at most {MAX_URL_CHARS} characters")
        return url


class ImagePartParam(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePartParam, Field(discriminator="type")]


class FunctionCallParam(_Open):
    name: str = Field(max_length=MAX_NAME_CHARS)
    arguments: str


class ToolCallParam(_Open):
    """A call an earlier assistant turn made (OpenAI's ``ChatCompletionMessageToolCallParam``)."""

    id: str = Field(max_length=MAX_TOOL_ID_CHARS)
    type: Literal["function"]
    function: FunctionCallParam


class ChatMessageParam(_Open):
    """One message; ``developer`` is OpenAI's new name for ``system`` and is treated as such.

    A ``tool`` message is a tool's result: it answers ``tool_call_id`` and holds text only. An
    ``assistant`` message may carry ``tool_calls`` (then its content may be null)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)
    tool_calls: Annotated[list[ToolCallParam], Field(max_length=MAX_TOOL_CALLS)] | None = None
    tool_call_id: str | None = Field(None, max_length=MAX_TOOL_ID_CHARS)

    @model_validator(mode="after")
    def _content_rules(self) -> ChatMessageParam:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls are only allowed in assistant messages")
        if (self.tool_call_id is None) == (self.role == "tool"):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        if isinstance(self.content, list):
            if not self.content:
                raise ValueError("content must not be an empty list")
            has_image = any(isinstance(p, ImagePartParam) for p in self.content)
            if has_image and self.role != "user":
                raise ValueError("image_url parts are only allowed in user messages")
        return self

    def text_chars(self) -> int:
        calls = sum(len(c.function.name) + len(c.function.arguments) for c in self.tool_calls or ())
        if isinstance(self.content, str):
            return len(self.content) + calls
        return sum(len(p.text) for p in self.content or () if isinstance(p, TextPart)) + calls


class FunctionDefinition(_Open):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolParam(_Open):
    """A tool the model may call (OpenAI's ``ChatCompletionFunctionToolParam``)."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Open):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(_Open):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_rules(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("response_format json_schema needs a json_schema, and only it has one")
        return self


class StreamOptions(_Open):
    include_usage: bool = False


StopSequence = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class _Generation(_Request):
    """The fields chat and completions requests share (same names, ranges and meaning as OpenAI's)."""

    model: str | None = Field(None, max_length=MAX_MODEL_CHARS)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=4)] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=MAX_USER_CHARS)


class ChatCompletionRequest(_Generation):
    # OPTIONAL_PARAMS without a typed field (store, audio, prediction, ...): refused unless an engine
    # honours them (the openai engine passes them on), never ignored.
    extra_params: ClassVar[frozenset[str]] = frozenset(OPTIONAL_PARAMS)
    messages: list[ChatMessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
                          Field(max_length=MAX_LOGIT_BIAS)] | None = None
    tools: Annotated[list[ToolParam], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]],
                        Field(max_length=MAX_METADATA)] | None = None

    # Field validators, not the model one, so that the 400's ``param`` names the field.
    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs set to true")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if any(not (k.isascii() and k.isdigit() and len(k) <= 10) for k in value or {}):
            raise ValueError("logit_bias keys must be token ids (decimal digits)")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_needs_tools(cls, value: Any, info: ValidationInfo) -> Any:
        tools = info.data.get("tools") or []
        if value not in (None, "none", "auto") and not tools:
            raise ValueError("tool_choice needs tools")
        if isinstance(value, NamedToolChoice) and value.function.name not in {t.function.name for t in tools}:
            raise ValueError("tool_choice names a function that is not in tools")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if sum(m.text_chars() for m in self.messages) > MAX_CHARS:
            raise ValueError(f"messages hold more than {MAX_CHARS} characters of text")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be an assistant message")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def requested_params(self) -> set[str]:
        """The optional OpenAI parameters this request asks for (``OPTIONAL_PARAMS``); a conversation
        with ``tool`` messages or assistant ``tool_calls`` asks for ``tools`` too."""
        asked = {name for name, value in self._optional_values().items()
                 if not any(value == neutral for neutral in OPTIONAL_PARAMS[name])}
        if any(m.role == "tool" or m.tool_calls for m in self.messages):
            asked.add("tools")
        return asked

    def upstream_params(self) -> dict[str, Any]:
        """The requested optional parameters (and ``user``) as JSON, for an engine that passes them on."""
        values = self._optional_values()
        asked = self.requested_params()
        if "tools" in asked:  # with tools, "none" and "auto" are choices, not defaults: say which
            asked |= {"tool_choice", "parallel_tool_calls"}
        out = {name: values[name] for name in asked if name in values}
        if self.user is not None:
            out["user"] = self.user
        return out

    def _optional_values(self) -> dict[str, Any]:
        """Every optional parameter the body set, as plain JSON (typed fields dumped by their wire names)."""
        extra = self.model_extra or {}
        values: dict[str, Any] = {}
        for name in OPTIONAL_PARAMS:
            if name in self.model_fields_set:
                value = getattr(self, name)
                if isinstance(value, BaseModel):
                    value = value.model_dump(mode="json", by_alias=True, exclude_unset=True)
                elif isinstance(value, list):
                    value = [v.model_dump(mode="json", by_alias=True, exclude_unset=True)
                             if isinstance(v, BaseModel) else v for v in value]
                values[name] = value
            elif name in extra:
                values[name] = extra[name]
        return values

    def to_engine_params(self, default_max_tokens: int = DEFAULT_MAX_TOKENS,
                         upstream: bool = False) -> SamplingParams:
        """Engine sampling parameters; unset fields take OpenAI's defaults. ``upstream``: the engine
        passes the optional parameters on (``SamplingParams.upstream``)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            n=self.n or 1,
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
            logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()),
            upstream=self.upstream_params() if upstream else {},
        )


class CompletionRequest(_Generation):
    """``POST /v1/completions``: continue ``prompt`` (one string, or a list: ``n`` choices each, indexed
    prompt by prompt). ``echo`` puts the prompt before each choice's text. Refused everywhere (400 naming
    it, ``COMPLETION_REFUSED``): ``logprobs`` (the legacy format is not implemented), ``suffix``, and
    ``best_of`` other than 1; ``n`` and ``logit_bias`` follow the engine's capabilities."""

    extra_params: ClassVar[frozenset[str]] = frozenset(COMPLETION_REFUSED)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
    echo: bool = False
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]],
                          Field(max_length=MAX_LOGIT_BIAS)] | None = None

    _logit_bias_keys = field_validator("logit_bias")(ChatCompletionRequest._logit_bias_keys.__func__)

    @model_validator(mode="after")
    def _cross_checks(self) -> CompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if sum(map(len, self.prompts)) > MAX_CHARS:
            raise ValueError(f"prompt holds more than {MAX_CHARS} characters")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def refused_param(self) -> str | None:
        """The first parameter no engine here honours on this endpoint, or None."""
        extra = self.model_extra or {}
        return next((k for k, neutral in COMPLETION_REFUSED.items()
                     if k in extra and not any(extra[k] == v for v in neutral)), None)

    def requested_params(self) -> set[str]:
        asked = {"n"} if (self.n or 1) > 1 else set()
        return asked | ({"logit_bias"} if self.logit_bias else set())

    def to_engine_params(self) -> SamplingParams:
        """OpenAI's defaults where unset (max_tokens 16, as the legacy endpoint has it)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self.max_tokens or COMPLETION_MAX_TOKENS,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p, stop=stop, seed=self.seed,
            presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
            n=self.n or 1, logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()),
            upstream={k: v for k, v in (("n", self.n), ("logit_bias", self.logit_bias), ("user", self.user))
                      if v is not None},
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


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None = None
    refusal: list[TokenLogprobOut] | None = None


class AssistantMessage(BaseModel):
    """``reasoning_content`` is not OpenAI's: it carries an upstream's reasoning text (vLLM's name),
    scored by the guard like the content; absent when there is none."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    safety: SafetyVerdict | None = None


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    reasoning_content: str | None = None


class ChatCompletionStreamChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionStreamResponse(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    safety: SafetyVerdict | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class CompletionResponse(BaseModel):
    """A ``text_completion``; streamed, each chunk has this shape too (``finish_reason`` null until a
    choice ends, as OpenAI sends it)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
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


class ModerationRequest(_Request):
    """``input``: one string, a list of strings (one result each), or a list of text/image parts
    (one result for the whole list). Limits on counts and sizes are checked by the handler."""

    input: str | list[str] | list[ContentPart]
    model: str | None = Field(None, max_length=MAX_MODEL_CHARS)

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
