"""``POST /v1/chat/completions``: hand the validated request to ``ServingChat``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service.protocol import ChatCompletionRequest, ChatCompletionResponse, ErrorResponse
from service.serving.chat import ServingChat

_ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 429, 503, 504)}


async def create_chat_completion(req: ChatCompletionRequest, raw: Request) -> Response:
    handler: ServingChat = raw.app.state.serving_chat
    result = await handler.create_chat_completion(req, raw)
    if result.stream is not None:
        return StreamingResponse(
            result.stream, media_type="text/event-stream", headers=result.headers
        )
    assert result.body is not None
    body = result.body.model_dump(mode="json")
    if body.get("safety") is None:  # only present in annotate mode
        body.pop("safety", None)
    return JSONResponse(body, headers=result.headers)


def attach_router(app: FastAPI) -> None:
    app.add_api_route(
        "/v1/chat/completions", create_chat_completion, methods=["POST"],
        response_model=ChatCompletionResponse, responses=_ERRORS,
    )
