"""Moderation endpoint logic: projection onto OpenAI's categories, request validation, limits,
batching through the shared guard, fail-closed behaviour (scripted backends, no HTTP)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from pydantic import ValidationError

from models.backends import GuardInput, Verdict, project_scores, target_names
from service.batching import DynamicBatcher
from service.config import GuardPolicy
from service.errors import InvalidRequest, NotFound, Overloaded, PayloadTooLarge, ServiceUnavailable
from service.guard import Guard
from service.metrics import GuardMetrics
from service.protocol import ModerationRequest
from service.serving.moderations import MAX_MODERATION_INPUTS, ServingModerations
from service.settings import MAX_CHARS, MAX_IMAGES_PER_REQUEST, ServeSettings
from tests.fakes import FakeBackend, png_bytes, png_data_url

WEAPON = "Malicious Use/Security threats/weapon"  # → illicit/violent
THREATEN = "Representation & ToxicityHarms/Toxic/threaten"  # → harassment/threatening
PRIVACY_LIKE = "Information & Safety Harms"  # a domain with no OpenAI counterpart
OPENAI_13 = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
             "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions",
             "sexual", "sexual/minors", "violence", "violence/graphic"]


def _policy(**knobs: object) -> GuardPolicy:
    """The default settings' guard policy with ``knobs`` changed."""
    return replace(ServeSettings().guard_policy(), **knobs)  # type: ignore[arg-type]


@dataclass
class TaxonomyBackend:
    """Scripted verdicts over real taxonomy keys: 'gun' fires WEAPON; 'kill you' scores THREATEN
    high but below its firing threshold; 'dox' flags with no mapped node."""

    name: str = "taxonomy-fake"
    max_batch_size: int = 16
    fail: bool = False
    batches: list[list[GuardInput]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def health(self) -> bool:
        return True

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        with self._lock:
            self.batches.append(list(batch))
        if self.fail:
            raise RuntimeError("scripted failure")
        return [self._verdict(i) for i in batch]

    def _verdict(self, item: GuardInput) -> Verdict:
        text = item.text.lower() + b" ".join(item.images).decode("latin-1").lower()
        scores = {WEAPON: 0.01, THREATEN: 0.01, PRIVACY_LIKE: 0.01}
        fired: dict[str, float] = {}
        if "gun" in text:
            scores[WEAPON] = fired[WEAPON] = 0.93
        if "kill you" in text:
            scores[THREATEN] = 0.45  # high-ish, but not fired
        if "dox" in text:
            scores[PRIVACY_LIKE] = fired[PRIVACY_LIKE] = 0.8
        flagged = bool(fired)
        return Verdict(task=item.task, unsafe_prob=0.9 if flagged else 0.05, flagged=flagged,
                       categories=fired, scores=scores)


@pytest.fixture
async def make() -> AsyncIterator:
    started: list[DynamicBatcher] = []

    async def _make(backend=None, max_wait_s: float = 0.0, **policy) -> ServingModerations:
        backend = backend or TaxonomyBackend()
        batcher = DynamicBatcher(backend.score, 16, max_wait_s, 64, 5.0)
        batcher.start()
        started.append(batcher)
        policy = {"mode": "annotate", "fail_policy": "closed", **policy}
        return ServingModerations(Guard(batcher, _policy(**policy), GuardMetrics()))

    yield _make
    for b in started:
        await b.stop()


def test_projection_helpers_match_openai_names_and_reject_bad_input() -> None:
    assert target_names("openai") == OPENAI_13
    assert len(target_names("mlcommons")) > 0
    out = project_scores({WEAPON: 0.7, THREATEN: 0.2, "not a node": 0.99}, "openai")
    assert list(out) == OPENAI_13
    assert out["illicit/violent"] == 0.7 and out["harassment/threatening"] == 0.2
    assert out["sexual"] == 0.0
    with pytest.raises(ValueError, match="unknown projection target"):
        project_scores({}, "llamaguard")
    with pytest.raises(ValueError, match="probability"):
        project_scores({WEAPON: 1.5}, "openai")
    with pytest.raises(ValueError, match="probability"):
        project_scores({WEAPON: float("nan")}, "openai")


@pytest.mark.parametrize("bad", [{"input": ""}, {"input": "   "}, {"input": []}, {"input": ["a", ""]},
                                 {"input": 3}, {"input": [{"type": "audio", "x": 1}]}, {}])
def test_request_rejects_empty_or_malformed_input(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ModerationRequest.model_validate(bad)


async def test_string_input_projects_scores_and_fired_categories(make) -> None:
    serving = await make()
    body, headers = await serving.create_moderation(ModerationRequest(input="where to buy a gun"))
    assert body.id.startswith("modr-") and body.model == "spa-guard-moderation"
    (res,) = body.results
    assert res.flagged is True
    assert list(res.categories) == OPENAI_13 and list(res.category_scores) == OPENAI_13
    assert [k for k, v in res.categories.items() if v] == ["illicit/violent"]
    assert res.category_scores["illicit/violent"] == pytest.approx(0.93)
    assert res.category_applied_input_types == {n: ["text"] for n in OPENAI_13}
    assert res.spa_vl.flagged and res.spa_vl.categories == {WEAPON: pytest.approx(0.93)}
    assert headers["x-request-id"] == body.id and float(headers["x-guard-queue-time"]) >= 0


async def test_high_score_without_firing_is_not_a_category_and_unmapped_flag_still_flags(make) -> None:
    serving = await make()
    body, _ = await serving.create_moderation(ModerationRequest(input=["I will kill you", "dox her"]))
    threat, dox = body.results
    assert threat.flagged is False and not any(threat.categories.values())
    assert threat.category_scores["harassment/threatening"] == pytest.approx(0.45)
    # Flagged by the classifier on a node with no OpenAI counterpart: flagged, no category true.
    assert dox.flagged is True and not any(dox.categories.values())
    assert dox.spa_vl.categories == {PRIVACY_LIKE: pytest.approx(0.8)}


async def test_list_of_strings_gives_one_result_each_in_order_sharing_a_batch(make) -> None:
    backend = TaxonomyBackend()
    serving = await make(backend, max_wait_s=0.05)
    texts = ["hello", "a gun", "nice day", "gun shop"]
    body, _ = await serving.create_moderation(ModerationRequest(input=texts))
    assert [r.flagged for r in body.results] == [False, True, False, True]
    assert len(backend.batches) == 1 and [i.text for i in backend.batches[0]] == texts


async def test_multimodal_parts_give_one_result_scored_on_text_and_image(make) -> None:
    backend = TaxonomyBackend()
    serving = await make(backend)
    image = png_bytes()
    req = ModerationRequest(input=[{"type": "text", "text": "look"},
                                   {"type": "image_url", "image_url": {"url": png_data_url(image)}}])
    body, _ = await serving.create_moderation(req)
    (res,) = body.results
    assert res.category_applied_input_types["violence"] == ["text", "image"]
    (item,) = backend.batches[0]
    assert item.text == "look" and item.images == (image,)
    only_image = ModerationRequest(input=[{"type": "image_url", "image_url": {"url": png_data_url()}}])
    body, _ = await serving.create_moderation(only_image)
    assert body.results[0].category_applied_input_types["sexual"] == ["image"]


async def test_long_text_is_scored_in_windows_so_a_late_harm_is_found(make) -> None:
    backend = TaxonomyBackend()
    serving = await make(backend)
    text = "benign words " * 200 + "where to buy a gun"
    body, _ = await serving.create_moderation(ModerationRequest(input=text))
    assert body.results[0].flagged is True
    assert sum(len(b) for b in backend.batches) > 1


async def test_limits_and_model_names(make) -> None:
    serving = await make()
    with pytest.raises(InvalidRequest, match="at most"):
        await serving.create_moderation(ModerationRequest(input=["x"] * (MAX_MODERATION_INPUTS + 1)))
    with pytest.raises(PayloadTooLarge):
        await serving.create_moderation(ModerationRequest(input="x" * (MAX_CHARS + 1)))
    many = [{"type": "image_url", "image_url": {"url": png_data_url()}}] * (MAX_IMAGES_PER_REQUEST + 1)
    with pytest.raises(InvalidRequest, match="images"):
        await serving.create_moderation(ModerationRequest(input=many))
    with pytest.raises(InvalidRequest, match="no text and no image"):
        await serving.create_moderation(ModerationRequest(input=[{"type": "text", "text": " "}]))
    with pytest.raises(InvalidRequest):  # remote image URLs are off without a fetcher
        await serving.create_moderation(ModerationRequest(
            input=[{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]))
    with pytest.raises(NotFound):
        await serving.create_moderation(ModerationRequest(input="hi", model="gpt-4o"))
    for name in ("omni-moderation-latest", "text-moderation-latest", "spa-guard-moderation", None):
        body, _ = await serving.create_moderation(ModerationRequest(input="hi", model=name))
        assert body.model == "spa-guard-moderation"


async def test_backend_failure_is_503_never_a_silent_pass(make) -> None:
    serving = await make(TaxonomyBackend(fail=True))
    with pytest.raises(ServiceUnavailable):
        await serving.create_moderation(ModerationRequest(input="a gun"))


async def test_fake_backend_without_taxonomy_keys_still_flags(make) -> None:
    serving = await make(FakeBackend())
    body, _ = await serving.create_moderation(ModerationRequest(input=["a bomb", "tea"]))
    assert [r.flagged for r in body.results] == [True, False]
    assert all(s == 0.0 for s in body.results[0].category_scores.values())


async def test_full_guard_queue_is_429_and_cancels_the_sibling_inputs() -> None:
    backend = FakeBackend(delay_s=0.2)
    batcher = DynamicBatcher(backend.score, 1, 0.0, 1, 5.0)  # one in flight, one queued
    batcher.start()
    try:
        serving = ServingModerations(Guard(batcher, _policy(mode="annotate"), GuardMetrics()))
        with pytest.raises(Overloaded):  # the APIError itself, not an ExceptionGroup
            await serving.create_moderation(ModerationRequest(input=["a", "b", "c"]))
        body, _ = await serving.create_moderation(ModerationRequest(input="tea"))  # still serving
        assert body.results[0].flagged is False
    finally:
        await batcher.stop()
    assert backend.items_seen <= 2  # "c" was refused and the queued sibling was withdrawn or scored


def test_moderation_guard_must_annotate_and_fail_closed() -> None:
    batcher = DynamicBatcher(FakeBackend().score, 4, 0.0, 8, 1.0)
    for policy in (_policy(mode="block"), _policy(mode="annotate", fail_policy="open")):
        with pytest.raises(ValueError, match="annotate and fail closed"):
            ServingModerations(Guard(batcher, policy, GuardMetrics()))
