"""``GET /v1/models``: the one served model, with ``random_weights``, what the engine loaded and the
guard's setup; ``GET /v1/models/{id}``: that card, or 404 (``model_not_found``) in OpenAI's envelope.

``engine`` is the engine's ``model_info`` when it has one (the transformers engine says which weights
are real or random and whether the model sees images); engines that proxy a server leave it empty.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import Field

from service.errors import NotFound
from service.protocol import ErrorResponse, ModelCard, ModelList


# NOTE: the ``engine`` field lives here, not in service.protocol's ModelCard, so that only this route
# (the one that knows the engine) fills it; a list typed with the subclass serializes it.
class ServedModelCard(ModelCard):
    engine: dict[str, Any] = Field(default_factory=dict)


class ServedModelList(ModelList):
    data: list[ServedModelCard]


def _card(raw: Request) -> ServedModelCard:
    state = raw.app.state
    return ServedModelCard(
        id=state.serving_chat.model_name,
        random_weights=state.engine.random_weights,
        engine=dict(getattr(state.engine, "model_info", None) or {}),
        guard={"backend": state.guard_backend_name, "mode": state.settings.guard_mode},
    )


async def list_models(raw: Request) -> ServedModelList:
    return ServedModelList(data=[_card(raw)])


async def retrieve_model(model_id: str, raw: Request) -> ServedModelCard:
    card = _card(raw)
    if model_id != card.id:
        raise NotFound("model not found; see GET /v1/models", param="model", code="model_not_found")
    return card


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/v1/models", list_models, methods=["GET"], response_model=ServedModelList)
    # ``:path``: a served name may hold slashes (hub ids such as llava-hf/llava-1.5-7b-hf).
    app.add_api_route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"],
                      response_model=ServedModelCard, responses={404: {"model": ErrorResponse}})
