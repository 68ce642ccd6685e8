"""Request messages (wire format) → engine ``ChatMessage``s, loading every image; and what of them
the guard scores.

Enforces the per-request image limit; images are loaded concurrently (data: URLs decoded and
checked, remote URLs fetched only with a ``RemoteImageFetcher``). ``developer`` becomes ``system``;
``tool`` messages and assistant ``tool_calls`` are kept for engines that take them.

``scored_messages`` is the conversation as the prompt check sees it: a tool's result is outside
content the model will read, so it is scored as a user turn (whatever roles the policy scores, it
scores user text); an assistant turn's tool calls are scored as its text (name and arguments); the
tool definitions and a response format's JSON schema reach the model too, so they are scored as a
system turn.
"""

from __future__ import annotations

import asyncio

import json

from service.engines.base import ChatMessage, ImagePart, ToolCall
from service.errors import InvalidRequest
from service.images import RemoteImageFetcher, load_image
from service.protocol import ChatCompletionRequest, ChatMessageParam, ImagePartParam, TextPart
from service.settings import MAX_IMAGES_PER_REQUEST


async def to_engine_messages(
    messages: list[ChatMessageParam], fetcher: RemoteImageFetcher | None
) -> tuple[ChatMessage, ...]:
    """Normalize and load; raises 400/413 on a bad or too-large image."""
    urls = [
        part.image_url.url
        for m in messages
        if isinstance(m.content, list)
        for part in m.content
        if isinstance(part, ImagePartParam)
    ]
    if len(urls) > MAX_IMAGES_PER_REQUEST:
        raise InvalidRequest(
            f"at most {MAX_IMAGES_PER_REQUEST} images per request", param="messages",
            code="too_many_images",
        )
    images = iter(await asyncio.gather(*(load_image(u, fetcher) for u in urls)))
    out = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        parts: list[str | ImagePart] = []
        if isinstance(m.content, str):
            parts.append(m.content)
        elif m.content is not None:
            for part in m.content:
                parts.append(part.text if isinstance(part, TextPart) else next(images))
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        out.append(ChatMessage(role=role, content=tuple(parts), tool_calls=calls, tool_call_id=m.tool_call_id))
    return tuple(out)


def scored_messages(messages: tuple[ChatMessage, ...], req: ChatCompletionRequest | None = None
                    ) -> tuple[ChatMessage, ...]:
    """The conversation as the prompt check scores it (module docstring)."""
    out = []
    definitions = _definitions_text(req) if req is not None else ""
    if definitions:
        out.append(ChatMessage(role="system", content=(definitions,)))
    for m in messages:
        if m.role == "tool":
            out.append(ChatMessage(role="user", content=m.content))
        elif m.tool_calls:
            calls = tuple(f"{c.name}({c.arguments})" for c in m.tool_calls)
            out.append(ChatMessage(role=m.role, content=(*m.content, *calls)))
        else:
            out.append(m)
    return tuple(out)


def _definitions_text(req: ChatCompletionRequest) -> str:
    """The tools' names, descriptions and parameter schemas, and a response format's schema, as text."""
    texts = [f"{t.function.name}: {t.function.description or ''} {json.dumps(t.function.parameters or {})}"
             for t in req.tools or ()]
    fmt = req.response_format
    if fmt is not None and fmt.json_schema is not None:
        texts.append(f"{fmt.json_schema.name}: {fmt.json_schema.description or ''} "
                     f"{json.dumps(fmt.json_schema.schema_ or {})}")
    return "\n".join(texts)
