"""The in-process transformers engine (a tiny random Llama) through the guard, driven by the official
``openai`` client (issue 14, items 1, 5, 6 and 7): ``n``, ``logprobs``/``top_logprobs``, ``logit_bias`` and
``seed`` are honoured; tools and JSON mode are refused with a 400 naming them; without a seed sampling
differs per request, with one it reproduces; every body validates against the ``openai`` package's types.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402
from asgi_lifespan import LifespanManager  # noqa: E402

from service.engines.base import EngineConfig  # noqa: E402
from service.engines.hf import TransformersEngine  # noqa: E402
from tests.fakes import FakeBackend  # noqa: E402
from tests.hardening import make_app  # noqa: E402
from tests.openai_conformance import check_chat, check_chunk, check_error, sse_events  # noqa: E402
from tests.tiny import save_tiny_text_llm  # noqa: E402

MODEL = "tiny"


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_text_llm(tmp_path_factory.mktemp("tiny") / "llm", seed=3))


@asynccontextmanager
async def guarded(tiny_llm: str) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient, TransformersEngine]]:
    engine = TransformersEngine(EngineConfig(model=tiny_llm, served_model_name=MODEL, max_batch_size=8))
    app = make_app(FakeBackend(), engine)  # type: ignore[arg-type]
    async with LifespanManager(app) as manager:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://guard", timeout=60)
        async with http:
            yield openai.AsyncOpenAI(base_url="http://guard/v1", api_key="k", http_client=http), http, engine


def _ask(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 12, **kw}


async def test_n_seed_and_unseeded_sampling(tiny_llm: str) -> None:
    async with guarded(tiny_llm) as (client, http, _):
        short = {"max_tokens": 8, "temperature": 1.0}  # a fast test: 8 tokens are plenty to tell samples apart
        out = await client.chat.completions.create(**_ask(n=3, seed=11, logprobs=True, **short))
        again = await client.chat.completions.create(**_ask(n=3, seed=11, **short))
        other = await client.chat.completions.create(**_ask(n=3, seed=12, **short))
        unseeded = [(await client.chat.completions.create(**_ask(**short))).choices[0].message.content
                    for _ in range(3)]
        body = (await http.post("/v1/chat/completions", json=_ask(n=2, **short))).json()
    texts = [c.message.content for c in out.choices]
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len(set(texts)) > 1  # the choices are sampled apart
    assert [c.message.content for c in again.choices] == texts  # a seed reproduces
    assert [c.message.content for c in other.choices] != texts
    assert len(set(unseeded)) > 1  # before the fix every unseeded call was the same
    # All three completions are counted: each is its logprobs' tokens, plus the EOS when it stopped.
    assert out.usage.completion_tokens == sum(len(c.logprobs.content) + (c.finish_reason == "stop") for c in out.choices)
    check_chat(body)


async def test_logprobs_and_top_logprobs_greedy(tiny_llm: str) -> None:
    async with guarded(tiny_llm) as (client, http, _):
        out = await client.chat.completions.create(**_ask(temperature=0, logprobs=True, top_logprobs=3))
        body = (await http.post("/v1/chat/completions", json=_ask(temperature=0, logprobs=True, top_logprobs=3))).json()
        stream = (await http.post("/v1/chat/completions", json=_ask(temperature=0, logprobs=True, top_logprobs=2,
                                                                    stream=True))).text
    check_chat(body)
    entries = out.choices[0].logprobs.content
    generated = out.usage.completion_tokens - (out.choices[0].finish_reason == "stop")  # EOS is not reported
    assert len(entries) == generated
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0.0
        assert e.logprob == pytest.approx(e.top_logprobs[0].logprob)  # greedy: the sampled token is the argmax
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        assert e.bytes == list(e.token.encode())
    events = sse_events(stream)
    for event in events:
        check_chunk(event)
    streamed = [x for e in events for c in e["choices"] for x in ((c.get("logprobs") or {}).get("content") or [])]
    assert [x["logprob"] for x in streamed] == pytest.approx([e.logprob for e in entries])


async def test_logit_bias_forces_a_token_and_out_of_vocabulary_ids_are_400(tiny_llm: str) -> None:
    async with guarded(tiny_llm) as (client, http, engine):
        token = engine.prompts.tokenizer("a", add_special_tokens=False).input_ids[-1]
        out = await client.chat.completions.create(**_ask(temperature=0, max_tokens=6, logit_bias={str(token): 100}))
        r = await http.post("/v1/chat/completions", json=_ask(logit_bias={"999999": 5}))
    assert out.choices[0].message.content == "a" * 6 and out.choices[0].finish_reason == "length"
    assert r.status_code == 400 and "vocabulary" in check_error(r.json()).message


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}},
     "response_format"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"store": True}, "store"),
])
async def test_what_the_engine_cannot_do_is_refused_naming_it(tiny_llm: str, extra: dict, param: str) -> None:
    async with guarded(tiny_llm) as (client, http, _):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(**_ask(**extra))
        r = await http.post("/v1/chat/completions", json=_ask(**extra))
    assert info.value.body["param"] == param and info.value.body["code"] == "unsupported_parameter"
    assert check_error(r.json()).param == param
