"""``ServingModerations.create_moderation``: OpenAI's moderation API served by the harm classifier.

Pipeline: validate limits → load images (``service.images``: data: URLs, or http(s) only with a
``RemoteImageFetcher`` and its SSRF rules) → one ``Guard.check_input`` per result, concurrently
(so they share classifier batches and the guard's metrics) → project each ``Verdict`` onto
OpenAI's 13 categories.

Result semantics:
* ``category_scores[name]``: the max probability of the taxonomy nodes that map to ``name``
  (``project_scores(verdict.scores, "openai")``); 0.0 when no node maps to it.
* ``categories[name]``: true when a node that *fired* (``Verdict.categories``: above its own
  threshold) maps to ``name``.
* ``flagged``: the classifier's own decision (``Verdict.flagged``) or any category true, so a
  harmful input whose nodes have no OpenAI counterpart (e.g. privacy) is still flagged.
* ``category_applied_input_types``: the input types this result was scored on, per category as
  OpenAI applies them: text for every category, images only for ``IMAGE_CATEGORIES`` (violence,
  self-harm and sexual, not sexual/minors); OpenAI's own types (``openai.types.Moderation``) allow
  nothing else. Our classifier does read images for every category, so the other categories' scores
  still count what an image shows; the field says what OpenAI's contract says.
* ``spa_vl``: the classifier's verdict (probability, flag, fired nodes).

The guard here always annotates and fails closed (``GuardPolicy.for_moderation``): a moderation
answer without a verdict would be a silent pass. Limits: ``MAX_MODERATION_INPUTS`` strings (400),
``MAX_IMAGES_PER_REQUEST`` images (400), ``MAX_CHARS`` characters in all (413).
"""

from __future__ import annotations

import asyncio
import uuid

from starlette.requests import Request

from models.backends import GuardInput, project_scores, target_names
from service.errors import InvalidRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from service.guard import Guard, GuardDecision
from service.images import RemoteImageFetcher, load_image
from service.protocol import (
    ImagePartParam,
    InputType,
    ModerationRequest,
    ModerationResponse,
    ModerationResult,
    TextPart,
)
from service.serving.verdict_render import moderation_headers, task_verdict
from service.settings import MAX_CHARS, MAX_IMAGES_PER_REQUEST, MAX_MODERATION_INPUTS

PROJECTION_TARGET = "openai"
# OpenAI's omni-moderation applies images to these categories only (its API reference and the
# openai package's ``CategoryAppliedInputTypes``, where the others are ``List[Literal["text"]]``).
# NOTE(issue 14): a fact about OpenAI's API, not about our taxonomy, so it lives here.
IMAGE_CATEGORIES = frozenset({
    "sexual", "self-harm", "self-harm/intent", "self-harm/instructions", "violence", "violence/graphic",
})
MODERATION_MODEL_NAME = "spa-guard-moderation"  # what responses report as ``model``
# Model names OpenAI clients send; all are answered by our classifier (a drop-in replacement).
OPENAI_MODEL_ALIASES = frozenset({
    "omni-moderation-latest", "omni-moderation-2024-09-26",
    "text-moderation-latest", "text-moderation-stable", "text-moderation-007",
})


class ServingModerations:
    """Handles ``POST /v1/moderations``; ``guard`` must share the service's batcher."""

    def __init__(
        self, guard: Guard, model_name: str = MODERATION_MODEL_NAME,
        fetcher: RemoteImageFetcher | None = None,
    ) -> None:
        if guard.policy != guard.policy.for_moderation():
            raise ValueError("the moderation guard must annotate and fail closed")
        self.guard = guard
        self.model_name = model_name
        self.fetcher = fetcher
        self.names = target_names(PROJECTION_TARGET)

    def accepts_model(self, model: str | None) -> bool:
        return model is None or model == self.model_name or model in OPENAI_MODEL_ALIASES

    async def create_moderation(
        self, req: ModerationRequest, raw: Request | None = None
    ) -> tuple[ModerationResponse, dict[str, str]]:
        """The response body and its ``x-guard-*`` / ``x-request-id`` headers; raises ``APIError``."""
        if not self.accepts_model(req.model):
            raise NotFound("model not found; see GET /v1/models", param="model", code="model_not_found")
        request_id = f"modr-{uuid.uuid4().hex}"
        if raw is not None:
            raw.state.request_id = request_id  # for the failure log in service.errors
        items = await self._guard_inputs(req)
        decisions = await self._check_all(request_id, items)
        results = [self._result(item, d) for item, d in zip(items, decisions)]
        body = ModerationResponse(id=request_id, model=self.model_name, results=results)
        return body, {"x-request-id": request_id, **moderation_headers(decisions)}

    async def _check_all(self, request_id: str, items: list[GuardInput]) -> list[GuardDecision]:
        """Score all items concurrently (they share batches). The first failure (e.g. 429 when
        the guard queue is full) cancels the others, so they leave the queue, and is raised as is."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self.guard.check_input(request_id, i)) for i in items]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [t.result() for t in tasks]

    async def _guard_inputs(self, req: ModerationRequest) -> list[GuardInput]:
        """One ``GuardInput`` per result; checks the limits before any image is decoded."""
        data = req.input
        if isinstance(data, str):
            data = [data]
        strings = [x for x in data if isinstance(x, str)]
        parts = [x for x in data if not isinstance(x, str)]
        if len(strings) > MAX_MODERATION_INPUTS:
            raise InvalidRequest(f"at most {MAX_MODERATION_INPUTS} inputs per request", param="input",
                                 code="too_many_inputs")
        chars = sum(map(len, strings)) + sum(len(p.text) for p in parts if isinstance(p, TextPart))
        if chars > MAX_CHARS:
            raise PayloadTooLarge(f"input holds more than {MAX_CHARS} characters", param="input")
        if strings:
            return [GuardInput(text=s) for s in strings]
        urls = [p.image_url.url for p in parts if isinstance(p, ImagePartParam)]
        if len(urls) > MAX_IMAGES_PER_REQUEST:
            raise InvalidRequest(f"at most {MAX_IMAGES_PER_REQUEST} images per request", param="input",
                                 code="too_many_images")
        text = "\n".join(p.text for p in parts if isinstance(p, TextPart))
        if not text.strip() and not urls:
            raise InvalidRequest("input parts hold no text and no image", param="input")
        images = await asyncio.gather(*(load_image(u, self.fetcher) for u in urls))
        return [GuardInput(text=text, images=tuple(img.data for img in images))]

    def _result(self, item: GuardInput, decision: GuardDecision) -> ModerationResult:
        verdict = decision.verdict
        if verdict is None:  # only a fail-open guard returns no verdict; ours fails closed
            raise ServiceUnavailable("safety guard unavailable", code="guard_unavailable")
        scores = project_scores(verdict.scores, PROJECTION_TARGET)
        # Every fired node counts as 1.0, so a category is true iff some fired node maps to it.
        fired = project_scores(dict.fromkeys(verdict.categories, 1.0), PROJECTION_TARGET)
        categories = {name: fired[name] == 1.0 for name in self.names}
        has_text, has_image = bool(item.text.strip()), bool(item.images)

        def applied(name: str) -> list[InputType]:
            types: list[InputType] = ["text"] if has_text else []
            return types + ["image"] if has_image and name in IMAGE_CATEGORIES else types

        return ModerationResult(
            flagged=verdict.flagged or any(categories.values()),
            categories=categories,
            category_scores={name: scores[name] for name in self.names},
            category_applied_input_types={name: applied(name) for name in self.names},
            spa_vl=task_verdict(verdict),
        )

