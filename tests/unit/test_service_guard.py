"""Guard policy: every mode, outcomes, fail-open/closed, hold-back window, headers and safety field."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

from models.backends import GuardInput
from service.batching import DynamicBatcher
from service.engines.base import ChatMessage, ImagePart
from service.errors import ContentFiltered, GatewayTimeout, Overloaded, ServiceUnavailable
from models.segment import RESPONSE_SEGMENT_CHARS, SEGMENT_OVERLAP_CHARS, Segmenter, response_windows
from service.guard import (
    REFUSAL_MESSAGE,
    SLICE_ITEMS,
    Guard,
    prompt_input,
)
from service.metrics import GuardMetrics
from service.serving.verdict_render import guard_headers, safety_field
from service.settings import ServeSettings
from tests.fakes import FakeBackend

SAFE = GuardInput(text="how do plants grow")
UNSAFE = GuardInput(text="how to build a bomb")


def _sample(metrics: GuardMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.fixture
async def make_guard() -> AsyncIterator:
    started: list[DynamicBatcher] = []

    async def make(backend: FakeBackend | None = None, **policy) -> tuple[Guard, FakeBackend]:
        backend = backend or FakeBackend()
        batcher = DynamicBatcher(backend.score, 8, 0.0, 16, 1.0)
        batcher.start()
        started.append(batcher)
        knobs = dataclasses.replace(ServeSettings().guard_policy(), **policy)
        return Guard(batcher, knobs, GuardMetrics()), backend

    yield make
    for b in started:
        await b.stop()


def test_prompt_input_takes_every_role_by_default_and_all_images() -> None:
    img1, img2 = ImagePart(b"one", "image/png"), ImagePart(b"two", "image/png")
    messages = (
        ChatMessage("system", ("be nice",)),
        ChatMessage("user", ("first", img1)),
        ChatMessage("assistant", ("ok",)),
        ChatMessage("user", (img2, "second")),
    )
    item = prompt_input(messages)
    assert item.text == "be nice\nfirst\nok\nsecond"  # harm can hide in any role
    assert item.images == (b"one", b"two")
    assert item.task == "prompt"
    assert prompt_input(messages, ("user",)).text == "first\nsecond"


async def test_the_policy_chooses_the_scored_roles(make_guard) -> None:
    messages = (ChatMessage("system", ("how to build a bomb",)), ChatMessage("user", ("hello",)))
    guard, _ = await make_guard()
    assert (await guard.check_input("r", guard.prompt_input(messages))).blocked  # hidden in the system message
    users_only, _ = await make_guard(roles=("user",))
    assert not (await users_only.check_input("r", users_only.prompt_input(messages))).blocked


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
async def test_empty_prompt_is_safe_without_scoring(make_guard, text: str) -> None:
    guard, backend = await make_guard()
    d = await guard.check_input("r", GuardInput(text))
    assert d.action == "allow" and d.verdict is not None and not d.verdict.flagged and d.verdict.unsafe_prob == 0.0
    assert backend.items_seen == 0
    with_image = await guard.check_input("r", GuardInput(text, images=(b"a bomb drawn in the picture",)))
    assert with_image.blocked  # an image is still scored


@pytest.mark.parametrize(
    ("mode", "flagged_action"), [("block", "block"), ("annotate", "annotate"), ("shadow", "shadow")]
)
async def test_modes(make_guard, mode: str, flagged_action: str) -> None:
    guard, _ = await make_guard(mode=mode)
    safe = await guard.check_input("r1", SAFE)
    unsafe = await guard.check_input("r2", UNSAFE)
    assert safe.action == "allow" and not safe.blocked
    assert unsafe.action == flagged_action
    assert unsafe.blocked == (mode == "block")
    assert unsafe.verdict is not None and unsafe.verdict.categories == {"Violence": 0.97}
    m = guard.metrics
    assert _sample(m, "guard_verdict_total", task="prompt", label="unsafe", action=flagged_action) == 1
    assert _sample(m, "guard_verdict_total", task="prompt", label="safe", action="allow") == 1


async def test_annotate_headers_and_safety_field(make_guard) -> None:
    guard, _ = await make_guard(mode="annotate")
    d = await guard.check_input("r", UNSAFE)
    headers = guard_headers(d, report=guard.outcome(d).report)
    assert headers["x-guard-action"] == "annotate"
    assert headers["x-guard-prompt-flagged"] == "true"
    assert headers["x-guard-prompt-categories"] == "Violence=0.9700"
    assert float(headers["x-guard-queue-time"]) >= 0
    safety = safety_field(d, report=guard.outcome(d).report)
    assert safety is not None and safety.prompt is not None and safety.prompt.flagged
    assert safety.prompt.categories == {"Violence": 0.97}


async def test_block_and_shadow_do_not_expose_the_verdict(make_guard) -> None:
    for mode in ("block", "shadow"):
        guard, _ = await make_guard(mode=mode)
        d = await guard.check_input("r", UNSAFE)
        report = guard.outcome(d).report
        assert safety_field(d, report=report) is None
        assert set(guard_headers(d, report=report)) == {"x-guard-queue-time", "x-guard-inference-time"}


@pytest.mark.parametrize(
    ("mode", "block_style", "kind"),
    [("block", "refusal", "refuse"), ("block", "error", "reject"), ("annotate", "error", "proceed"),
     ("shadow", "refusal", "proceed")],
)
async def test_outcome_of_a_flagged_check(make_guard, mode: str, block_style: str, kind: str) -> None:
    guard, _ = await make_guard(mode=mode, block_style=block_style)
    prompt = await guard.check_input("r", UNSAFE)
    response = await guard.check_output("r", SAFE, await guard.check_input("r", SAFE), "a poison")
    for d, what in ((prompt, "request"), (response, "response")):
        out = guard.outcome(d)
        assert out.kind == kind and out.report == (mode == "annotate")
        assert out.refusal == (REFUSAL_MESSAGE if kind == "refuse" else None)
        if kind == "reject":
            assert isinstance(out.error, ContentFiltered) and out.error.status == 400
            assert out.error.code == "content_filter" and what in out.error.message
        else:
            assert out.error is None


async def test_outcome_proceeds_when_safe_or_failed_open(make_guard) -> None:
    guard, backend = await make_guard(mode="block", fail_policy="open")
    assert guard.outcome(await guard.check_input("r", SAFE)).kind == "proceed"
    backend.fail = True
    failed = await guard.check_input("r", UNSAFE)
    assert failed.action == "fail_open" and guard.outcome(failed).kind == "proceed"


async def test_fail_closed_raises_503_and_counts(make_guard, caplog) -> None:
    guard, backend = await make_guard(fail_policy="closed")
    backend.fail = True
    with caplog.at_level(logging.WARNING, "spaguard.guard"), pytest.raises(ServiceUnavailable) as e:
        await guard.check_input("req-9", SAFE)
    assert e.value.status == 503 and e.value.code == "guard_unavailable"
    assert _sample(guard.metrics, "guard_request_failure_total", err="backend_error") == 1
    assert any('"request_id": "req-9"' in r.message and "fail_closed" in r.message
               for r in caplog.records)


async def test_fail_open_lets_request_through(make_guard) -> None:
    guard, backend = await make_guard(fail_policy="open")
    backend.fail = True
    d = await guard.check_input("r", UNSAFE)
    assert d.action == "fail_open" and d.verdict is None and not d.blocked
    assert _sample(guard.metrics, "guard_request_failure_total", err="backend_error") == 1


async def test_timeout_follows_fail_policy(make_guard) -> None:
    guard, _ = await make_guard(FakeBackend(delay_s=0.3), fail_policy="closed", timeout_s=0.05)
    with pytest.raises(GatewayTimeout) as e:
        await guard.check_input("r", SAFE)
    assert e.value.status == 504
    guard, _ = await make_guard(FakeBackend(delay_s=0.3), fail_policy="open", timeout_s=0.05)
    assert (await guard.check_input("r", SAFE)).action == "fail_open"
    assert _sample(guard.metrics, "guard_request_failure_total", err="timeout") == 1


async def test_overload_keeps_429_when_closed(make_guard) -> None:
    guard, _ = await make_guard()

    async def full(_: GuardInput):
        raise Overloaded("guard queue is full")

    guard.batcher.submit = full  # type: ignore[method-assign]
    with pytest.raises(Overloaded) as e:
        await guard.check_input("r", SAFE)
    assert e.value.status == 429


async def test_stream_holdback_releases_only_scored_text(make_guard) -> None:
    guard, backend = await make_guard(mode="block", stream_holdback_chars=10)
    prompt_decision = await guard.check_input("r", SAFE)
    sg = guard.stream("r", SAFE, prompt_decision)
    assert (await sg.push("Hello ")).release == ""  # 6 < 10 chars: held
    step = await sg.push("world, ")  # 13 chars pending: scored, released
    assert step.release == "Hello world, " and step.decision is not None
    assert backend.batches[-1][0].response == "Hello world, "
    assert (await sg.push("the ")).release == ""
    step = await sg.push("bomb is ")  # the whole response so far is scored
    assert step.blocked and step.release == ""
    assert backend.batches[-1][0].response == "Hello world, the bomb is "


async def test_stream_finish_scores_the_tail(make_guard) -> None:
    guard, backend = await make_guard(mode="block", stream_holdback_chars=100)
    d = await guard.check_input("r", SAFE)
    sg = guard.stream("r", SAFE, d)
    assert (await sg.push("a poison")).release == ""
    step = await sg.finish()
    assert step.blocked


async def test_stream_passthrough_outside_block_mode(make_guard) -> None:
    guard, backend = await make_guard(mode="shadow", stream_holdback_chars=1)
    d = await guard.check_input("r", SAFE)
    sg = guard.stream("r", SAFE, d)
    assert (await sg.push("bomb ")).release == "bomb "  # shadow: not held, not blocked
    n = len(backend.batches)
    step = await sg.finish()
    assert not step.blocked and step.decision is not None and step.decision.action == "shadow"
    assert len(backend.batches) == n + 1  # scored once, at the end


async def test_response_check_uses_prompt_ocr_not_images(make_guard) -> None:
    guard, backend = await make_guard()
    prompt = GuardInput(text="describe", images=(b"\x89PNG...",))
    d = await guard.check_input("r", prompt)
    await guard.check_output("r", prompt, d, "a reply")
    item = backend.batches[-1][0]
    assert item.response == "a reply" and item.images == () and item.text.startswith("describe")


@pytest.mark.parametrize("length", [0, 5, 599, 600, 601, 1000, 5003])
@pytest.mark.parametrize("start", [0, 7, 450, 900])
def test_text_windows_cover_every_span(length: int, start: int) -> None:
    text = "".join(chr(65 + i % 26) for i in range(length))
    windows = response_windows(text, 600, start)
    assert all(len(w) <= 600 for w in windows) and windows[-1] == text[-600:]
    # Every substring of length <= overlap inside text[start:] lies within one window.
    for pos in range(min(start, length), length, 37):
        piece = text[pos:pos + SEGMENT_OVERLAP_CHARS]
        assert any(piece in w for w in windows)


async def test_long_prompt_is_scored_in_pieces_that_fit_the_model(make_guard) -> None:
    # The fake model only reads what fits one window, like a truncating encoder.
    window = Segmenter().window_chars
    guard, backend = await make_guard(FakeBackend(max_chars=window))
    long_prompt = GuardInput("please " * 600 + "now build a bomb", images=(b"img",))
    d = await guard.check_input("r", long_prompt)
    assert d.blocked and d.verdict.categories == {"Violence": 0.97}
    items = [i for b in backend.batches for i in b]
    assert len(items) > 3 and items[0].images == (b"img",)
    assert all(i.images == () for i in items[1:])  # images (OCR) scored once
    assert all(len(i.text) <= window for i in items)


async def test_a_big_prompt_is_scored_in_slices_and_stops_at_the_first_flag(make_guard) -> None:
    guard, backend = await make_guard()
    words = " ".join(f"benign{i}." for i in range(2000)) + " build a bomb. " + " ".join(f"calm{i}." for i in range(2000))
    d = await guard.check_input("r", GuardInput(words))
    assert d.blocked
    assert max(len(b) for b in backend.batches) <= SLICE_ITEMS  # never more than a slice in the queue
    total = len(Segmenter().prompt_items(GuardInput(words)))
    assert backend.items_seen < total  # the slices after the flagged one were not scored


async def test_a_big_prompt_leaves_room_for_small_ones(make_guard) -> None:
    guard, backend = await make_guard(FakeBackend(delay_s=0.01))
    big = GuardInput(" ".join(f"sentence number {i} is calm." for i in range(3000)))
    big_task = asyncio.create_task(guard.check_input("big", big))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    small = await guard.check_input("small", SAFE)
    waited = asyncio.get_running_loop().time() - started
    assert not small.blocked and not big_task.done()
    assert waited < 0.5  # a few slices' worth, not the whole big prompt
    await big_task


async def test_overload_is_refused_even_when_failing_open(make_guard) -> None:
    guard, _ = await make_guard(fail_policy="open")

    async def full(item: GuardInput):
        raise Overloaded("guard queue is full")

    guard.batcher.submit = full  # type: ignore[method-assign]
    with pytest.raises(Overloaded):
        await guard.check_input("r", UNSAFE)
    assert _sample(guard.metrics, "guard_request_failure_total", err="overloaded") == 1.0


async def test_long_response_is_scored_in_windows(make_guard) -> None:
    guard, _ = await make_guard(FakeBackend(max_chars=RESPONSE_SEGMENT_CHARS))
    d = await guard.check_input("r", SAFE)
    out = await guard.check_output("r", SAFE, d, "fine words. " * 300 + "add the poison")
    assert out.blocked


async def test_stream_with_large_holdback_scores_all_new_text(make_guard) -> None:
    guard, _ = await make_guard(FakeBackend(max_chars=RESPONSE_SEGMENT_CHARS),
                                stream_holdback_chars=5000, stream_first_release_chars=5000)
    d = await guard.check_input("r", SAFE)
    sg = guard.stream("r", SAFE, d)
    await sg.push("x" * 1000)
    await sg.push(" poison " + "y" * 1000)
    assert (await sg.finish()).blocked


async def test_one_failing_window_fails_the_check_with_its_own_status(make_guard) -> None:
    guard, _ = await make_guard()
    real_submit = guard.batcher.submit
    cancelled: list[str] = []

    async def submit(item: GuardInput):
        if item.text.startswith("x"):
            raise Overloaded("guard queue is full")
        try:
            await asyncio.sleep(1)  # a slow sibling: must be cancelled, not awaited
            return await real_submit(item)
        except asyncio.CancelledError:
            cancelled.append(item.text[:3])
            raise

    guard.batcher.submit = submit  # type: ignore[method-assign]
    long_prompt = GuardInput("a" * 2000 + "x" * 2000)
    with pytest.raises(Overloaded) as e:
        await guard.check_input("r", long_prompt)
    assert e.value.status == 429 and e.value.code == "guard_overloaded"
    assert cancelled  # siblings left the queue


async def test_stream_first_release_uses_a_shorter_scored_window(make_guard) -> None:
    guard, backend = await make_guard(mode="block", stream_holdback_chars=20,
                                      stream_first_release_chars=5)
    d = await guard.check_input("r", SAFE)
    sg = guard.stream("r", SAFE, d)
    assert (await sg.push("Hi")).release == ""  # 2 < 5: held
    step = await sg.push(" there")  # 8 >= 5: scored, then released
    assert step.release == "Hi there" and backend.batches[-1][0].response == "Hi there"
    assert (await sg.push(" my dear friend")).release == ""  # later windows are 20 chars
    step = await sg.push(" bomb")
    assert step.blocked and backend.batches[-1][0].response == "Hi there my dear friend bomb"


async def test_stream_first_release_is_capped_by_the_holdback(make_guard) -> None:
    guard, _ = await make_guard(mode="block", stream_holdback_chars=4,
                                stream_first_release_chars=50)
    d = await guard.check_input("r", SAFE)
    sg = guard.stream("r", SAFE, d)
    assert (await sg.push("Hello")).release == "Hello"


async def test_off_mode_scores_nothing_and_passes_everything(make_guard) -> None:
    guard, backend = await make_guard(mode="off")
    decision = await guard.check_input("r-off", UNSAFE)
    assert decision.action == "off" and decision.verdict is None and not decision.blocked
    out = await guard.check_output("r-off", UNSAFE, decision, "here is how to build a bomb")
    assert out.action == "off" and guard.outcome(out).kind == "proceed"
    stream = guard.stream("r-off", UNSAFE, decision)
    assert (await stream.push("how to build a bomb")).release == "how to build a bomb"
    assert backend.items_seen == 0
    # Only the timing headers every response carries: nothing was queued or scored.
    assert guard_headers(decision, out, report=False) == {"x-guard-queue-time": "0.000000",
                                                           "x-guard-inference-time": "0.000000"}
    assert safety_field(decision, out, report=False) is None
