"""``GET /v1/models``: the one served model, with ``random_weights`` and the guard's setup."""

from __future__ import annotations

from fastapi import FastAPI, Request

from service.protocol import ModelCard, ModelList


async def list_models(raw: Request) -> ModelList:
    state = raw.app.state
    card = ModelCard(
        id=state.serving_chat.model_name,
        random_weights=state.engine.random_weights,
        guard={"backend": state.guard_backend_name, "mode": state.settings.guard_mode},
    )
    return ModelList(data=[card])


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/v1/models", list_models, methods=["GET"], response_model=ModelList)
