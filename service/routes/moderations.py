"""``POST /v1/moderations``: hand the validated request to ``ServingModerations``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.protocol import ErrorResponse, ModerationRequest, ModerationResponse
from service.serving.moderations import ServingModerations

_ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 429, 503, 504)}


async def create_moderation(req: ModerationRequest, raw: Request) -> JSONResponse:
    handler: ServingModerations = raw.app.state.serving_moderations
    body, headers = await handler.create_moderation(req, raw)
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


def attach_router(app: FastAPI) -> None:
    app.add_api_route(
        "/v1/moderations", create_moderation, methods=["POST"],
        response_model=ModerationResponse, responses=_ERRORS,
    )
