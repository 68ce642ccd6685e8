"""FakeEngineClient: a scripted engine for tests and demos (``--engine fake --model script.json``).

Script file (JSON)::

    {
      "model_name": "fake-vlm",               # optional; served name (default "fake-vlm")
      "chunk_delay_s": 0.0,                   # optional pause between chunks
      "max_model_len": 512,                   # optional context length (tokens, counted below)
      "responses": [                          # first rule whose "match" occurs in the last
        {"match": "poem", "chunks": ["Roses ", "are ", "red."]},   # user text wins
        {"match": "boom", "error": "scripted engine failure"},     # raise EngineError instead
        {"match": "die", "chunks": ["Half"], "error": "gone",      # stream the chunks, then fail
         "error_status": 503},                                     # (502 default, 503, 504, 400)
        {"match": "weather", "reasoning": ["Think ", "first."],    # reasoning_content deltas first
         "tool_calls": [{"name": "get_weather",                    # then tool calls, each name
                         "arguments": ["{\"city\": ", "\"Paris\"}"]}]}  # and its argument deltas
      ],
      "default": {"chunks": ["Hello", "!"]}   # optional; without it the engine echoes the text
    }

Chunks are streamed in order (reasoning, then content, then tool calls); ``finish_reason`` defaults
to "stop" ("tool_calls" when the rule calls tools, "length" when the content chunks exceed
``max_tokens``, counting one token per chunk). With ``n`` > 1 the rule is answered once per choice,
the choices interleaved chunk by chunk. ``tool_choice: "none"`` suppresses the scripted calls.
Capabilities (``service.engines.capabilities.FAKE``): ``n`` and tools. Token counts: prompt = whitespace words of
all text plus 16 per image, completion = chunks emitted. ``aborted`` records aborted request ids.
With ``max_model_len``, a prompt of that many tokens or more is refused (``PromptTooLong``) by
``check_request`` and by ``generate``; ``checked`` records the ids ``check_request`` saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.engines.capabilities import FAKE
from service.engines.base import (
    EngineBadRequest,
    EngineConfig,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineTimeout,
    EngineUnavailable,
    PromptTooLong,
    ToolCallDelta,
)

IMAGE_TOKENS = 16  # nominal prompt tokens per image


@dataclass(frozen=True)
class ScriptedToolCall:
    name: str
    arguments: tuple[str, ...]
    id: str | None = None


@dataclass(frozen=True)
class ScriptedResponse:
    chunks: tuple[str, ...] = ()
    match: str | None = None
    error: str | None = None
    error_status: int = 502
    finish_reason: str | None = None  # None: "tool_calls" when the rule calls tools, else "stop"
    reasoning: tuple[str, ...] = ()
    tool_calls: tuple[ScriptedToolCall, ...] = ()


@dataclass
class FakeEngineClient:
    """Implements ``EngineClient`` with scripted responses; see the module docstring."""

    responses: list[ScriptedResponse] = field(default_factory=list)
    default: ScriptedResponse | None = None
    model_name: str = "fake-vlm"
    chunk_delay_s: float = 0.0
    max_model_len: int | None = None
    random_weights: bool = False
    capabilities: frozenset[str] = FAKE
    healthy: bool = True
    aborted: list[str] = field(default_factory=list)
    requests: list[EngineRequest] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    opened: bool = False
    _active: set[str] = field(default_factory=set)

    @classmethod
    def from_config(cls, config: EngineConfig) -> FakeEngineClient:
        """Build from ``config.model``, the path of a script JSON file (None: echo engine)."""
        if config.model is None:
            engine = cls()
        else:
            engine = cls.from_script(_read_script(Path(config.model)))
        if config.served_model_name:
            engine.model_name = config.served_model_name
        if config.max_model_len is not None:
            engine.max_model_len = config.max_model_len
        return engine

    @classmethod
    def from_script(cls, script: dict[str, Any]) -> FakeEngineClient:
        unknown = set(script) - {"model_name", "chunk_delay_s", "max_model_len", "responses", "default"}
        if unknown:
            raise ValueError(f"unknown keys in fake engine script: {sorted(unknown)}")
        responses = [_rule(r) for r in script.get("responses", [])]
        default = _rule(script["default"]) if "default" in script else None
        return cls(
            responses=responses,
            default=default,
            model_name=str(script.get("model_name", "fake-vlm")),
            chunk_delay_s=float(script.get("chunk_delay_s", 0.0)),
            max_model_len=int(script["max_model_len"]) if "max_model_len" in script else None,
        )

    async def __aenter__(self) -> FakeEngineClient:
        self.opened = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.opened = False
        self._active.clear()

    async def check_health(self) -> None:
        if not self.healthy or not self.opened:
            raise EngineUnavailable("fake engine is down")

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        self._active.discard(request_id)

    async def check_request(self, request: EngineRequest) -> None:
        self.checked.append(request.request_id)
        self._check_context(request)

    def _check_context(self, request: EngineRequest) -> int:
        """The prompt's token count; raises ``PromptTooLong`` when it fills the context."""
        words = sum(len(m.text.split()) for m in request.messages)
        prompt_tokens = words + IMAGE_TOKENS * sum(len(m.images) for m in request.messages)
        if self.max_model_len is not None and prompt_tokens >= self.max_model_len:
            raise PromptTooLong(prompt_tokens, self.max_model_len)
        return prompt_tokens

    def _pick(self, request: EngineRequest) -> ScriptedResponse:
        users = [m for m in request.messages if m.role == "user"]
        last = users[-1].text if users else ""
        for rule in self.responses:
            if rule.match is not None and rule.match in last:
                return rule
        if self.default is not None:
            return self.default
        words = last.split(" ") if last else []  # echo, one word (and its space) per chunk
        return ScriptedResponse(chunks=tuple(w + " " for w in words[:-1]) + tuple(words[-1:]))

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if not self.opened:
            raise EngineUnavailable("fake engine is not open")
        self.requests.append(request)
        prompt_tokens = self._check_context(request)
        rule = self._pick(request)
        if rule.error is not None and not rule.chunks:
            raise _error(rule)
        steps = _steps(rule, request)
        self._active.add(request.request_id)
        for i, (kind, value) in enumerate(steps):
            last = i == len(steps) - 1
            for index in range(request.params.n):
                if request.request_id not in self._active:
                    return  # aborted
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                if last and rule.error is not None:  # dies mid-stream, after its chunks but the finish
                    yield EngineOutput(value, None, prompt_tokens, i + 1, index=index)
                    self._active.discard(request.request_id)
                    raise _error(rule)
                finish = _finish(rule, request) if last else None
                if kind == "text":
                    yield EngineOutput(value, finish, prompt_tokens, i + 1, index=index)
                elif kind == "reasoning":
                    yield EngineOutput("", finish, prompt_tokens, i + 1, index=index, reasoning=value)
                else:
                    yield EngineOutput("", finish, prompt_tokens, i + 1, index=index, tool_calls=(value,))
        if not steps:
            for index in range(request.params.n):
                yield EngineOutput("", _finish(rule, request), prompt_tokens, 0, index=index)
        self._active.discard(request.request_id)


def _calls_tools(rule: ScriptedResponse, request: EngineRequest) -> bool:
    return bool(rule.tool_calls) and request.params.upstream.get("tool_choice") != "none"


def _finish(rule: ScriptedResponse, request: EngineRequest) -> str:
    if len(rule.chunks) > request.params.max_tokens:
        return "length"
    return rule.finish_reason or ("tool_calls" if _calls_tools(rule, request) else "stop")


def _steps(rule: ScriptedResponse, request: EngineRequest) -> list[tuple[str, Any]]:
    """The rule's deltas in order: ("reasoning", text), ("text", text), ("tool", ToolCallDelta)."""
    steps: list[tuple[str, Any]] = [("reasoning", r) for r in rule.reasoning]
    steps += [("text", c) for c in rule.chunks[: request.params.max_tokens]]
    if _calls_tools(rule, request) and len(rule.chunks) <= request.params.max_tokens:
        for k, call in enumerate(rule.tool_calls):
            pieces = call.arguments or ("",)
            steps.append(("tool", ToolCallDelta(k, call.id or f"call_fake{k}", call.name, pieces[0])))
            steps += [("tool", ToolCallDelta(k, arguments=a)) for a in pieces[1:]]
    return steps


_ERRORS: dict[int, type[EngineError]] = {
    400: EngineBadRequest, 502: EngineError, 503: EngineUnavailable, 504: EngineTimeout,
}


def _error(rule: ScriptedResponse) -> EngineError:
    return _ERRORS[rule.error_status](rule.error)


def _rule(raw: Any) -> ScriptedResponse:
    if not isinstance(raw, dict):
        raise ValueError("each fake engine rule must be an object")
    unknown = set(raw) - {"match", "chunks", "error", "error_status", "finish_reason", "reasoning", "tool_calls"}
    if unknown:
        raise ValueError(f"unknown keys in fake engine rule: {sorted(unknown)}")
    chunks = raw.get("chunks", [])
    if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
        raise ValueError("'chunks' must be a list of strings")
    status = int(raw.get("error_status", 502))
    if status not in _ERRORS:
        raise ValueError(f"'error_status' must be one of {sorted(_ERRORS)}")
    reasoning = raw.get("reasoning", [])
    if not isinstance(reasoning, list) or not all(isinstance(c, str) for c in reasoning):
        raise ValueError("'reasoning' must be a list of strings")
    return ScriptedResponse(
        chunks=tuple(chunks),
        match=raw.get("match"),
        error=raw.get("error"),
        error_status=status,
        finish_reason=str(raw["finish_reason"]) if "finish_reason" in raw else None,
        reasoning=tuple(reasoning),
        tool_calls=tuple(_tool_call(c) for c in raw.get("tool_calls", [])),
    )


def _tool_call(raw: Any) -> ScriptedToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ValueError("each scripted tool call must be an object with a 'name'")
    unknown = set(raw) - {"name", "arguments", "id"}
    if unknown:
        raise ValueError(f"unknown keys in fake engine tool call: {sorted(unknown)}")
    arguments = raw.get("arguments", [])
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise ValueError("a tool call's 'arguments' must be a list of strings")
    return ScriptedToolCall(raw["name"], tuple(arguments), raw.get("id"))


def _read_script(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read fake engine script {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"fake engine script {path} must be a JSON object")
    return data
