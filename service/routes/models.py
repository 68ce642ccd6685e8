"""``GET /v1/models``: the one served model, with ``random_weights``, what the engine loaded and the
guard's setup.

``engine`` is the engine's ``model_info`` when it has one (the transformers engine says which weights
are real or random and whether the model sees images); engines that proxy a server leave it empty.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import Field

from service.protocol import ModelCard, ModelList


# NOTE: the ``engine`` field lives here, not in service.protocol's ModelCard, so that only this route
# (the one that knows the engine) fills it; a list typed with the subclass serializes it.
class ServedModelCard(ModelCard):
    engine: dict[str, Any] = Field(default_factory=dict)


class ServedModelList(ModelList):
    data: list[ServedModelCard]


async def list_models(raw: Request) -> ServedModelList:
    state = raw.app.state
    card = ServedModelCard(
        id=state.serving_chat.model_name,
        random_weights=state.engine.random_weights,
        engine=dict(getattr(state.engine, "model_info", None) or {}),
        guard={"backend": state.guard_backend_name, "mode": state.settings.guard_mode},
    )
    return ServedModelList(data=[card])


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/v1/models", list_models, methods=["GET"], response_model=ServedModelList)
