"""FakeEngineClient: a scripted engine for tests and demos (``--engine fake --model script.json``).

Script file (JSON)::

    {
      "model_name": "fake-vlm",               # optional; served name (default "fake-vlm")
      "chunk_delay_s": 0.0,                   # optional pause between chunks
      "responses": [                          # first rule whose "match" occurs in the last
        {"match": "poem", "chunks": ["Roses ", "are ", "red."]},   # user text wins
        {"match": "boom", "error": "scripted engine failure"}      # raise EngineError instead
      ],
      "default": {"chunks": ["Hello", "!"]}   # optional; without it the engine echoes the text
    }

Chunks are streamed in order; ``finish_reason`` defaults to "stop" (or "length" when the chunks
exceed ``max_tokens``, counting one token per chunk). Token counts: prompt = whitespace words of
all text plus 16 per image, completion = chunks emitted. ``aborted`` records aborted request ids.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.engines.base import (
    EngineConfig,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineUnavailable,
)

IMAGE_TOKENS = 16  # nominal prompt tokens per image


@dataclass(frozen=True)
class ScriptedResponse:
    chunks: tuple[str, ...] = ()
    match: str | None = None
    error: str | None = None
    finish_reason: str = "stop"


@dataclass
class FakeEngineClient:
    """Implements ``EngineClient`` with scripted responses; see the module docstring."""

    responses: list[ScriptedResponse] = field(default_factory=list)
    default: ScriptedResponse | None = None
    model_name: str = "fake-vlm"
    chunk_delay_s: float = 0.0
    random_weights: bool = False
    healthy: bool = True
    aborted: list[str] = field(default_factory=list)
    requests: list[EngineRequest] = field(default_factory=list)
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
        return engine

    @classmethod
    def from_script(cls, script: dict[str, Any]) -> FakeEngineClient:
        unknown = set(script) - {"model_name", "chunk_delay_s", "responses", "default"}
        if unknown:
            raise ValueError(f"unknown keys in fake engine script: {sorted(unknown)}")
        responses = [_rule(r) for r in script.get("responses", [])]
        default = _rule(script["default"]) if "default" in script else None
        return cls(
            responses=responses,
            default=default,
            model_name=str(script.get("model_name", "fake-vlm")),
            chunk_delay_s=float(script.get("chunk_delay_s", 0.0)),
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
        rule = self._pick(request)
        if rule.error is not None:
            raise EngineError(rule.error)
        words = sum(len(m.text.split()) for m in request.messages)
        prompt_tokens = words + IMAGE_TOKENS * sum(len(m.images) for m in request.messages)
        chunks = list(rule.chunks)
        finish = rule.finish_reason
        if len(chunks) > request.params.max_tokens:
            chunks, finish = chunks[: request.params.max_tokens], "length"
        self._active.add(request.request_id)
        for i, chunk in enumerate(chunks):
            if request.request_id not in self._active:
                return  # aborted
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            last = i == len(chunks) - 1
            yield EngineOutput(chunk, finish if last else None, prompt_tokens, i + 1)
        if not chunks:
            yield EngineOutput("", finish, prompt_tokens, 0)
        self._active.discard(request.request_id)


def _rule(raw: Any) -> ScriptedResponse:
    if not isinstance(raw, dict):
        raise ValueError("each fake engine rule must be an object")
    unknown = set(raw) - {"match", "chunks", "error", "finish_reason"}
    if unknown:
        raise ValueError(f"unknown keys in fake engine rule: {sorted(unknown)}")
    chunks = raw.get("chunks", [])
    if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
        raise ValueError("'chunks' must be a list of strings")
    return ScriptedResponse(
        chunks=tuple(chunks),
        match=raw.get("match"),
        error=raw.get("error"),
        finish_reason=str(raw.get("finish_reason", "stop")),
    )


def _read_script(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read fake engine script {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"fake engine script {path} must be a JSON object")
    return data
