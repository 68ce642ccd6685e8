"""``POST /v1/completions``: hand the validated request to ``ServingCompletions`` (built over the chat
handler: the same engine, guard and settings)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service.protocol import CompletionRequest, CompletionResponse, ErrorResponse
from service.serving.completions import ServingCompletions

_ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 429, 503, 504)}


async def create_completion(req: CompletionRequest, raw: Request) -> Response:
    handler = ServingCompletions(raw.app.state.serving_chat)
    result = await handler.create_completion(req, raw)
    if result.stream is not None:
        return StreamingResponse(result.stream, media_type="text/event-stream", headers=result.headers)
    assert result.body is not None
    body = result.body.model_dump(mode="json")
    if body.get("safety") is None:  # only present in annotate mode
        body.pop("safety", None)
    return JSONResponse(body, headers=result.headers)


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/v1/completions", create_completion, methods=["POST"],
                      response_model=CompletionResponse, responses=_ERRORS)
