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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class ImagePart:
    """A decoded-and-validated image from a request: the original encoded bytes and MIME type."""

    data: bytes
    mime_type: str  # e.g. "image/png"


@dataclass(frozen=True)
class ChatMessage:
    """One normalized chat turn; ``content`` keeps the order of text and image parts."""

    role: Literal["system", "user", "assistant"]
    content: tuple[str | ImagePart, ...]

    @property
    def text(self) -> str:
        return "\n".join(p for p in self.content if isinstance(p, str))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.content if isinstance(p, ImagePart))


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class EngineOutput:
    """A streamed delta. ``finish_reason`` is set on the last one ("stop" | "length")."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


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


EngineKind = Literal["transformers", "openai", "vllm", "fake"]
"""The engine implementations ``service.engines.build_engine`` knows (``--engine`` choices)."""


@dataclass(frozen=True)
class EngineConfig:
    """How to build an engine; built by ``ServeSettings.engine_config()``.

    kind: "transformers" (in-process, CPU default), "openai" (HTTP upstream), "vllm" (in-process
    AsyncLLM), "fake" (scripted, tests only).
    model: a local path or hub id; None with kind="transformers" means the embedded tiny
    random-weights LLaVA built from a config.
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
    random_weights: bool  # True for the embedded tiny default: reported in /v1/models and logs

    async def __aenter__(self) -> "EngineClient": ...

    async def __aexit__(self, *exc: object) -> None: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]: ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...
