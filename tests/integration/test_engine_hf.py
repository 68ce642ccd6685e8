"""The real transformers engine with the tiny LLaVA and a real photo (scikit-image's astronaut):
generate, stream, batch concurrent requests, abort, reject bad input, keep the loop free."""

from __future__ import annotations

import os

# Before transformers/huggingface_hub read it (they do at import time); nothing here needs the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from service.engines import build_engine  # noqa: E402
from service.engines.base import (  # noqa: E402
    ChatMessage,
    EngineBadRequest,
    EngineConfig,
    EngineOutput,
    EngineRequest,
    EngineUnavailable,
    ImagePart,
    SamplingParams,
)
from service.engines.hf import TINY_MODEL_NAME, TransformersEngine  # noqa: E402
from tests.tiny import astronaut_png  # noqa: E402

TINY = EngineConfig(model=TINY_MODEL_NAME)  # the tiny random-weights LLaVA (None is the real default)



@pytest.fixture(scope="module")
def photo() -> ImagePart:
    return ImagePart(astronaut_png(), "image/png")


def _req(rid: str, text: str = "Describe the picture.", image: ImagePart | None = None, **params) -> EngineRequest:
    content = (image, text) if image is not None else (text,)
    params.setdefault("temperature", 0.0)
    return EngineRequest(rid, (ChatMessage("user", content),), SamplingParams(**params))


async def _run(engine: TransformersEngine, request: EngineRequest) -> list[EngineOutput]:
    return [out async for out in engine.generate(request)]


def _text(outs: list[EngineOutput]) -> str:
    return "".join(o.text for o in outs)


def _spy_batches(engine: TransformersEngine) -> list[int]:
    """Record the batch size of every ``model.generate`` call."""
    sizes: list[int] = []
    real = engine.model.generate

    def spy(**kwargs):
        sizes.append(int(kwargs["input_ids"].shape[0]))
        return real(**kwargs)

    engine.model.generate = spy
    return sizes


async def test_generates_with_a_real_image_and_streams(photo: ImagePart) -> None:
    engine = build_engine(EngineConfig(kind="transformers", model=TINY_MODEL_NAME))
    async with engine:
        assert engine.random_weights is True and engine.model_name == TINY_MODEL_NAME
        await engine.check_health()
        outs = await _run(engine, _req("img", image=photo, max_tokens=12))
    assert all(o.finish_reason is None for o in outs[:-1]) and outs[-1].finish_reason in {"stop", "length"}
    assert outs[-1].completion_tokens <= 12 and len(outs) >= 2  # streamed as several deltas
    assert outs[-1].prompt_tokens >= 16 + len("Describe the picture.")  # 16 image tokens included
    assert [o.completion_tokens for o in outs] == sorted(o.completion_tokens for o in outs)


async def test_greedy_is_deterministic_and_seeded_sampling_reproduces(photo: ImagePart) -> None:
    async with TransformersEngine(TINY) as engine:
        a = await _run(engine, _req("a", image=photo, max_tokens=10))
        b = await _run(engine, _req("b", image=photo, max_tokens=10))
        s1 = await _run(engine, _req("s1", temperature=1.0, seed=7, max_tokens=10))
        s2 = await _run(engine, _req("s2", temperature=1.0, seed=7, max_tokens=10))
    assert _text(a) == _text(b)
    assert _text(s1) == _text(s2)


async def test_concurrent_requests_share_one_batch_and_match_solo_runs(photo: ImagePart) -> None:
    async with TransformersEngine(EngineConfig(model=TINY_MODEL_NAME, max_batch_size=4), max_wait_s=0.2) as engine:
        solo_img = await _run(engine, _req("solo-img", image=photo, max_tokens=8))
        solo_txt = await _run(engine, _req("solo-txt", text="hello there, how are you?", max_tokens=8))
        sizes = _spy_batches(engine)
        both = await asyncio.gather(
            _run(engine, _req("img", image=photo, max_tokens=8)),
            _run(engine, _req("txt", text="hello there, how are you?", max_tokens=8)),
        )
    assert sizes == [2]  # one generate call for both requests
    # left padding must not change greedy results
    assert _text(both[0]) == _text(solo_img) and _text(both[1]) == _text(solo_txt)
    assert both[0][-1].prompt_tokens == solo_img[-1].prompt_tokens


async def test_rows_with_different_sampling_run_as_separate_groups_in_one_batch(photo: ImagePart) -> None:
    async with TransformersEngine(TINY, max_wait_s=0.2) as engine:
        sizes = _spy_batches(engine)
        greedy, sampled = await asyncio.gather(
            _run(engine, _req("g", max_tokens=4)), _run(engine, _req("s", temperature=0.9, seed=1, max_tokens=4))
        )
    assert sorted(sizes) == [1, 1]
    assert greedy[-1].finish_reason and sampled[-1].finish_reason


async def test_abort_mid_stream_leaves_other_requests_running(photo: ImagePart) -> None:
    async with TransformersEngine(TINY, max_wait_s=0.2) as engine:
        victim: list[EngineOutput] = []

        async def consume_victim() -> None:
            async for out in engine.generate(_req("victim", max_tokens=400, text="go on")):
                victim.append(out)
                if len(victim) == 2:
                    await engine.abort("victim")

        _, other = await asyncio.gather(consume_victim(), _run(engine, _req("other", image=photo, max_tokens=6)))
        await engine.abort("victim")  # unknown / finished id: no-op
        after = await _run(engine, _req("after", max_tokens=3))
    assert len(victim) >= 2 and all(o.finish_reason is None for o in victim)
    assert victim[-1].completion_tokens < 100  # stopped early, not after 400 tokens
    assert other[-1].finish_reason is not None and after[-1].finish_reason is not None


async def test_leaving_the_iterator_aborts_the_row() -> None:
    async with TransformersEngine(TINY) as engine:
        gen = engine.generate(_req("leave", max_tokens=400))
        await anext(gen)
        start = time.monotonic()
        await gen.aclose()  # client disconnect
        nxt = await _run(engine, _req("next", max_tokens=2))  # waits for the aborted batch to end
        assert time.monotonic() - start < 20 and nxt[-1].finish_reason is not None
        assert engine._jobs == {}


async def test_bad_inputs_are_clear_bad_requests_and_do_not_hurt_the_batch(photo: ImagePart) -> None:
    async with TransformersEngine(EngineConfig(model=TINY_MODEL_NAME, max_model_len=128), max_wait_s=0.2) as engine:
        results = await asyncio.gather(
            _run(engine, _req("long", text="x" * 200)),
            _run(engine, _req("broken", image=ImagePart(b"\x89PNG not really", "image/png"))),
            _run(engine, _req("good", max_tokens=3)),
            return_exceptions=True,
        )
    long_err, broken_err, good = results
    assert isinstance(long_err, EngineBadRequest) and "context is 128 tokens" in str(long_err)
    assert isinstance(broken_err, EngineBadRequest) and "cannot decode image" in str(broken_err)
    assert isinstance(good, list) and good[-1].finish_reason is not None


async def test_max_tokens_is_capped_by_the_context() -> None:
    async with TransformersEngine(EngineConfig(model=TINY_MODEL_NAME, max_model_len=40)) as engine:
        outs = await _run(engine, _req("cap", text="hi", max_tokens=1000))
    last = outs[-1]
    assert last.prompt_tokens + last.completion_tokens <= 40
    assert last.finish_reason in {"stop", "length"}


async def test_event_loop_stays_responsive_during_generation() -> None:
    async with TransformersEngine(TINY) as engine:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await _run(engine, _req("busy", max_tokens=60, text="long answer please"))
        done.set()
        await tick
    assert len(gaps) >= 5 and max(gaps) < 1.0  # model work ran off the loop


async def test_health_and_generate_after_close_are_unavailable() -> None:
    engine = TransformersEngine(TINY)
    async with engine:
        await engine.check_health()
    with pytest.raises(EngineUnavailable):
        await engine.check_health()
    with pytest.raises(EngineUnavailable):
        await _run(engine, _req("closed"))


@pytest.mark.parametrize(
    ("params", "message"),
    [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p")],
)
async def test_invalid_sampling_params_are_bad_requests(params: dict, message: str) -> None:
    async with TransformersEngine(TINY) as engine:
        with pytest.raises(EngineBadRequest, match=message):
            await _run(engine, _req("bad", **params))


async def test_closing_the_engine_releases_running_and_queued_requests() -> None:
    engine = TransformersEngine(EngineConfig(model=TINY_MODEL_NAME, max_batch_size=1))
    await engine.__aenter__()
    started = asyncio.Event()

    async def running() -> list[EngineOutput]:
        outs = []
        async for out in engine.generate(_req("running", max_tokens=400)):
            outs.append(out)
            started.set()
        return outs

    first = asyncio.create_task(running())
    await started.wait()
    queued = asyncio.create_task(_run(engine, _req("queued", max_tokens=2)))  # waits: batch size 1
    await asyncio.sleep(0.05)
    await engine.__aexit__(None, None, None)
    results = await asyncio.wait_for(asyncio.gather(first, queued, return_exceptions=True), 30)
    assert isinstance(results[1], EngineUnavailable)
    assert isinstance(results[0], (list, EngineUnavailable))  # aborted quietly or told it shut down
    if isinstance(results[0], list):
        assert all(o.finish_reason is None for o in results[0])


async def test_unloadable_model_is_a_clear_unavailable_error(tmp_path) -> None:
    engine = TransformersEngine(EngineConfig(model=str(tmp_path / "no-such-model")))
    with pytest.raises(EngineUnavailable, match="cannot load model"):
        async with engine:
            pass
    assert engine.random_weights is False


async def test_a_saved_qwen2_vl_checkpoint_batches_like_llava(photo: ImagePart, tmp_path) -> None:
    from models.vlm import save_tiny_vlm

    path = save_tiny_vlm(tmp_path / "qwen", "qwen2_vl", seed=1)
    async with TransformersEngine(EngineConfig(model=str(path)), max_wait_s=0.2) as engine:
        assert engine.random_weights is False and engine.model_name == str(path)
        solo = [await _run(engine, _req(f"solo{i}", image=photo if i == 0 else None, max_tokens=6)) for i in range(2)]
        sizes = _spy_batches(engine)
        both = await asyncio.gather(
            _run(engine, _req("img", image=photo, max_tokens=6)), _run(engine, _req("txt", max_tokens=6))
        )
    assert sizes == [2]
    assert [_text(b) for b in both] == [_text(s) for s in solo]
