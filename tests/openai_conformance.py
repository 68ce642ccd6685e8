"""Conformance helpers (issue 14): every body the server sends validates against the ``openai`` package's own
pydantic types, strictly (no coercion: a "5" is not a 5).

* ``check_chat(body)``, ``check_chunk(chunk)``, ``check_completion(body)``, ``check_completion_chunk(event)``,
  ``check_moderation(body)``,
  ``check_model(card)``, ``check_error(body)``: validate one JSON body, return the typed object.
* ``sse_events(text)``: the JSON events of an SSE body (``[DONE]`` must be the last line).
"""

from __future__ import annotations

import json
from typing import Any

from openai.types import Completion, Model, ModerationCreateResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject


def check_chat(body: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(body, strict=True)


def check_chunk(chunk: dict[str, Any]) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(chunk, strict=True)


def check_completion(body: dict[str, Any]) -> Completion:
    return Completion.model_validate(body, strict=True)


def check_completion_chunk(event: dict[str, Any]) -> Completion:
    """One streamed ``/v1/completions`` event. OpenAI streams ``finish_reason: null`` until a choice ends,
    though the package's type says otherwise: null is allowed here, any other value must be one of its own."""
    for choice in event.get("choices", []):
        assert choice.get("finish_reason") is None or choice["finish_reason"] in ("stop", "length", "content_filter")
    return check_completion({**event, "choices": [{**c, "finish_reason": c.get("finish_reason") or "stop"}
                                                  for c in event.get("choices", [])]})


def check_moderation(body: dict[str, Any]) -> ModerationCreateResponse:
    return ModerationCreateResponse.model_validate(body, strict=True)


def check_model(card: dict[str, Any]) -> Model:
    return Model.model_validate(card, strict=True)


def check_error(body: dict[str, Any]) -> ErrorObject:
    assert set(body) == {"error"}, body
    return ErrorObject.model_validate(body["error"], strict=True)


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body; asserts it ends with ``data: [DONE]``."""
    lines = [line for line in text.split("\n") if line.startswith("data: ")]
    assert lines and lines[-1] == "data: [DONE]", lines[-3:]
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]
