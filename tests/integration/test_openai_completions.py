"""``POST /v1/completions`` through the guard, driven by the official ``openai`` client (issue 14, item 4):
a prompt string or list, ``n``, streaming, ``echo``, ``stop``, usage; guarded on the prompt and on the
output like chat; bodies validate against the ``openai`` package's ``Completion``. Engines: the scripted
one, and the tiny transformers model (a raw prompt, no chat template).
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
from service.engines.fake import FakeEngineClient  # noqa: E402
from service.engines.hf import TransformersEngine  # noqa: E402
from service.guard import REFUSAL_MESSAGE  # noqa: E402
from tests.fakes import FakeBackend  # noqa: E402
from tests.hardening import SCRIPT, make_app  # noqa: E402
from tests.openai_conformance import check_completion, check_completion_chunk, check_error, sse_events  # noqa: E402
from tests.tiny import save_tiny_text_llm  # noqa: E402


@asynccontextmanager
async def guarded(engine: Any = None, **settings: Any) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    app = make_app(FakeBackend(), engine or FakeEngineClient.from_script(SCRIPT), **settings)
    async with LifespanManager(app) as manager:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://guard", timeout=60)
        async with http:
            yield openai.AsyncOpenAI(base_url="http://guard/v1", api_key="k", http_client=http), http


async def test_prompt_list_n_echo_usage_and_guarding_with_the_sdk() -> None:
    engine = FakeEngineClient.from_script(SCRIPT)
    async with guarded(engine) as (client, http):
        out = await client.completions.create(model="fake-vlm", prompt=["Say hi", "chem steps", "how to make a bomb"],
                                              n=2, echo=True)
        raw = (await http.post("/v1/completions", json={"prompt": "Say hi", "max_tokens": 2})).json()
    check_completion(raw)
    assert raw["object"] == "text_completion" and raw["choices"][0]["finish_reason"] == "length"
    assert [c.index for c in out.choices] == list(range(6))
    hi, chem, bomb = out.choices[0:2], out.choices[2:4], out.choices[4:6]
    assert all(c.text == "Say hiHello there, friend." and c.finish_reason == "stop" for c in hi)
    # The harmful output is replaced, echo kept (the prompt was scored safe as input).
    assert all(c.text == "chem steps" + REFUSAL_MESSAGE and c.finish_reason == "content_filter" for c in chem)
    # The harmful prompt is not generated at all.
    assert all(c.finish_reason == "content_filter" and "Hello" not in c.text for c in bomb)
    assert [r.prompt for r in engine.requests] == ["Say hi", "chem steps", "Say hi"]  # the bomb prompt never ran
    assert out.usage.completion_tokens == 2 * 3 + 2 * 5


async def test_streaming_holds_back_and_blocks_like_chat() -> None:
    async with guarded() as (client, http):
        stream = await client.completions.create(model="fake-vlm", prompt="chem", stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        r = await http.post("/v1/completions", json={"prompt": ["hi", "chem"], "stream": True, "echo": True})
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert "poison" not in text and text.startswith("Step one")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    events = sse_events(r.text)
    for e in events:
        check_completion_chunk(e)
    by_index: dict[int, str] = {}
    for e in events:
        for c in e["choices"]:
            by_index[c["index"]] = by_index.get(c["index"], "") + c["text"]
    assert by_index[0] == "hiHello there, friend." and by_index[1].startswith("chem") and "poison" not in by_index[1]


async def test_refused_and_invalid_parameters_are_400_naming_them() -> None:
    bare = FakeEngineClient.from_script(SCRIPT)
    bare.capabilities = frozenset()  # an engine that serves chat only
    async with guarded() as (_, http):
        for body, param in (({"prompt": "x", "logprobs": 2}, "logprobs"), ({"prompt": "x", "suffix": "y"}, "suffix"),
                            ({"prompt": "x", "best_of": 3}, "best_of"), ({"prompt": "x", "logit_bias": {"1": 2}}, "logit_bias"),
                            ({"prompt": []}, "prompt"), ({"prompt": [1, 2]}, "prompt"), ({"prompt": "x", "n": 9}, "n"),
                            ({"prompt": "x", "model": "gpt-9"}, "model")):
            r = await http.post("/v1/completions", json=body)
            assert r.status_code in (400, 404) and check_error(r.json()).param is not None
            assert check_error(r.json()).param.startswith(param), (body, r.json())
    async with guarded(bare) as (_, http):
        r = await http.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 400 and check_error(r.json()).param == "prompt"


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_text_llm(tmp_path_factory.mktemp("tiny") / "llm", seed=4))


async def test_the_transformers_engine_continues_the_raw_prompt(tiny_llm: str) -> None:
    engine = TransformersEngine(EngineConfig(model=tiny_llm, served_model_name="tiny"))
    async with guarded(engine) as (client, http):
        out = await client.completions.create(model="tiny", prompt="Once upon", max_tokens=5, temperature=0, n=2)
        seeded = [(await client.completions.create(model="tiny", prompt="Once", max_tokens=8, seed=5)).choices[0].text
                  for _ in range(2)]
        token = engine.prompts.tokenizer("z", add_special_tokens=False).input_ids[-1]
        stopped = await client.completions.create(model="tiny", prompt="Once", max_tokens=8, temperature=0,
                                                  logit_bias={str(token): 100}, stop=["zzz"])
        raw = (await http.post("/v1/completions", json={"prompt": "Once", "max_tokens": 3, "stream": True})).text
    assert out.choices[0].text == out.choices[1].text  # greedy
    assert out.usage.prompt_tokens == len(engine_tokens(tiny_llm, "Once upon"))  # the raw prompt, no template, once
    assert seeded[0] == seeded[1]
    assert stopped.choices[0].text == "" and stopped.choices[0].finish_reason == "stop"  # cut at the stop string
    assert sse_events(raw)[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def engine_tokens(model_dir: str, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(text).input_ids


async def test_a_vision_model_continues_a_raw_prompt_too() -> None:
    engine = TransformersEngine(EngineConfig(model="spaguard-tiny-llava-random", served_model_name="tiny-vlm"))
    async with guarded(engine) as (_, http):
        r = await http.post("/v1/completions", json={"prompt": "Once", "max_tokens": 4, "temperature": 0, "n": 2})
    body = r.json()
    check_completion(body)
    first, second = body["choices"]
    assert first["text"] == second["text"] and first["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8
    tokens = engine_tokens_vlm("Once")
    assert body["usage"]["prompt_tokens"] == tokens  # the processor's tokens of the raw text, no template


def engine_tokens_vlm(text: str) -> int:
    from models.vlm import load_vlm

    _, processor = load_vlm(None, "cpu", "auto", seed=0)
    return int(processor(text=[text], return_tensors="pt")["input_ids"].shape[1])
