"""``POST /v1/completions``: hand the validated request to ``ServingCompletions`` (built over the chat
handler: the same engine, guard and settings)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.protocol import CompletionRequest, CompletionResponse
from service.routes.respond import ERROR_RESPONSES, respond
from service.serving.completions import ServingCompletions


async def create_completion(req: CompletionRequest, raw: Request) -> Response:
    handler = ServingCompletions(raw.app.state.serving_chat)
    return respond(await handler.create_completion(req, raw))


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/v1/completions", create_completion, methods=["POST"],
                      response_model=CompletionResponse, responses=ERROR_RESPONSES)
