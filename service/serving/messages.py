"""Request messages (wire format) → engine ``ChatMessage``s, loading every image.

Enforces the per-request image limit; images are loaded concurrently (data: URLs decoded and
checked, remote URLs fetched only with a ``RemoteImageFetcher``). ``developer`` becomes ``system``.
"""

from __future__ import annotations

import asyncio

from service.engines.base import ChatMessage, ImagePart
from service.errors import InvalidRequest
from service.images import RemoteImageFetcher, load_image
from service.protocol import ChatMessageParam, ImagePartParam, TextPart
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
        out.append(ChatMessage(role=role, content=tuple(parts)))
    return tuple(out)
