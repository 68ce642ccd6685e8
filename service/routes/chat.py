"""``POST /v1/chat/completions``: hand the validated request to ``ServingChat``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.protocol import ChatCompletionRequest, ChatCompletionResponse
from service.routes.respond import ERROR_RESPONSES, respond
from service.serving.chat import ServingChat


async def create_chat_completion(req: ChatCompletionRequest, raw: Request) -> Response:
    handler: ServingChat = raw.app.state.serving_chat
    return respond(await handler.create_chat_completion(req, raw))


def attach_router(app: FastAPI) -> None:
    app.add_api_route(
        "/v1/chat/completions", create_chat_completion, methods=["POST"],
        response_model=ChatCompletionResponse, responses=ERROR_RESPONSES,
    )
