"""Issue 11's input rows, in process (full app, fake engine and classifier): each fails on the code
before the fix and passes after.

* a lone surrogate anywhere in a body is a 400 at validation, never a guard failure, and cannot
  pass unscored under ``--fail-policy open``;
* ``seed`` past int64 is a 400 (it was a 502 from the engine);
* everything but image data has a small cap: stop strings, ``user``, ``name``, unknown fields,
  the body besides its images (400 / 413);
* OpenAI parameters the server cannot honour are refused, not ignored; known fields are strict;
* a prompt longer than the engine's context is refused before the guard scores anything.
"""

from __future__ import annotations

import json

import pytest

from service.engines.fake import FakeEngineClient
from service.settings import (
    MAX_EXTRA_CHARS,
    MAX_NAME_CHARS,
    MAX_NON_IMAGE_CHARS,
    MAX_STOP_CHARS,
    MAX_USER_CHARS,
)
from tests.fakes import FakeBackend, png_data_url
from tests.hardening import SCRIPT, chat, envelope, metric, serve


SURROGATE_BODIES = {
    "chat string content": '{"messages": [{"role": "user", "content": "bomb \\ud800 now"}]}',
    "chat text part": '{"messages": [{"role": "user", "content": [{"type": "text", "text": "x\\udfff"}]}]}',
    "message name": '{"messages": [{"role": "user", "content": "hi", "name": "\\ud83d"}]}',
    "unknown field value": '{"messages": [{"role": "user", "content": "hi"}], "meta": "\\ud800"}',
    "unknown field key": '{"messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}',
    "stop string": '{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}',
}


def _post_raw(client, path: str, text: str):
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.reliability("hostile input", "lone surrogate in a chat body", "400 invalid_unicode, no guard call")
@pytest.mark.parametrize("where", sorted(SURROGATE_BODIES))
async def test_lone_surrogate_in_chat_is_400_and_never_reaches_the_guard(where: str) -> None:
    backend = FakeBackend()
    async with serve(backend=backend, fail_policy="open") as c:
        r = await _post_raw(c, "/v1/chat/completions", SURROGATE_BODIES[where])
        err = envelope(r, 400)
        assert "surrogate" in err["message"] and "\\ud8" not in err["message"]
        metrics = (await c.get("/metrics")).text
    assert backend.batches == []  # not a guard failure: the classifier never saw it
    assert metric(metrics, "guard_request_failure_total", err="backend_error") == 0


@pytest.mark.reliability("hostile input", "lone surrogate in a moderation input", "400, no guard call")
@pytest.mark.parametrize("body", [
    '{"input": "I will \\ud800 hurt you"}',
    '{"input": ["fine", "\\udc00"]}',
    '{"input": [{"type": "text", "text": "\\ud800"}]}',
])
async def test_lone_surrogate_in_moderation_is_400(body: str) -> None:
    backend = FakeBackend()
    async with serve(backend=backend) as c:
        envelope(await _post_raw(c, "/v1/moderations", body), 400)
    assert backend.batches == []


@pytest.mark.reliability("hostile input", "lone surrogate under --fail-policy open", "400; never the harmful answer")
async def test_lone_surrogate_cannot_pass_unscored_under_fail_open() -> None:
    # Before the fix the surrogate failed the classifier, fail-open passed the prompt and the
    # fake engine answered with its harmful script.
    async with serve(fail_policy="open") as c:
        r = await _post_raw(c, "/v1/chat/completions",
                            '{"messages": [{"role": "user", "content": "chem \\ud800"}]}')
        envelope(r, 400)
        assert "poison" not in r.text


@pytest.mark.reliability("hostile input", "a valid astral character (emoji pair) still passes", "200")
async def test_valid_surrogate_pairs_are_fine() -> None:
    async with serve() as c:
        r = await _post_raw(c, "/v1/chat/completions",
                            '{"messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}]}')
        assert r.status_code == 200, r.text


@pytest.mark.reliability("hostile input", "seed out of int64 range", "400 (was 502 engine_error)")
@pytest.mark.parametrize("seed", [10**30, -(2**63) - 1, 2**63])
async def test_seed_past_int64_is_400(seed: int) -> None:
    engine = FakeEngineClient.from_script(SCRIPT)
    async with serve(engine=engine) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi", seed=seed)), 400)
        assert err["param"] == "seed"
        ok = await c.post("/v1/chat/completions", json=chat("hi", seed=2**63 - 1))
        assert ok.status_code == 200
    assert len(engine.requests) == 1


CAPPED = {
    "stop: 4 x 100k chars": ({"stop": ["x" * 100_000] * 4}, 413),
    "stop: one sequence over the cap": ({"stop": "x" * (MAX_STOP_CHARS + 1)}, 400),
    "user: 1 MB": ({"user": "u" * 1_000_000}, 413),
    "user: over the cap": ({"user": "u" * (MAX_USER_CHARS + 1)}, 400),
    "unknown field: 20 MB": ({"vendor_blob": "z" * 20_000_000}, 413),
    "unknown fields: over the cap": ({f"f{i}": "z" * 1000 for i in range(MAX_EXTRA_CHARS // 1000 + 1)}, 413),
    "unknown field: nested 40 deep": ({"deep": json.loads("[" * 40 + "]" * 40)}, 400),
}


@pytest.mark.reliability("hostile input", "oversize non-image field", "400 / 413, never 200")
@pytest.mark.parametrize("case", sorted(CAPPED))
async def test_everything_but_image_data_has_a_small_cap(case: str) -> None:
    extra, status = CAPPED[case]
    engine = FakeEngineClient.from_script(SCRIPT)
    async with serve(engine=engine) as c:
        envelope(await c.post("/v1/chat/completions", json=chat("hi", **extra)), status)
    assert engine.requests == []


@pytest.mark.reliability("hostile input", "message name of 1 MB / over the cap", "413 / 400")
async def test_message_name_is_capped() -> None:
    async with serve() as c:
        for name, status in (("n" * 1_000_000, 413), ("n" * (MAX_NAME_CHARS + 1), 400)):
            body = {"messages": [{"role": "user", "content": "hi", "name": name}]}
            envelope(await c.post("/v1/chat/completions", json=body), status)
        ok = {"messages": [{"role": "user", "content": "hi", "name": "alice"}]}
        assert (await c.post("/v1/chat/completions", json=ok)).status_code == 200


@pytest.mark.reliability("hostile input", "unknown field within the cap (SDK extra_body)",
                         "400 unknown_parameter naming it, never ignored; the same request without it: 200")
async def test_small_unknown_fields_are_refused_and_images_still_pass() -> None:
    async with serve() as c:
        parts = [{"type": "text", "text": "what is this"},
                 {"type": "image_url", "image_url": {"url": png_data_url()}}]
        r = await c.post("/v1/chat/completions", json=chat(parts, vendor={"trace": "a" * 1000}))
        err = envelope(r, 400)
        assert err["param"] == "vendor" and err["code"] == "unknown_parameter"
        r = await c.post("/v1/chat/completions", json=chat(parts))
        assert r.status_code == 200, r.text


@pytest.mark.reliability("hostile input", "moderation input over the non-image cap", "413")
async def test_moderation_body_is_capped_too() -> None:
    async with serve() as c:
        envelope(await c.post("/v1/moderations", json={"input": "x" * (MAX_NON_IMAGE_CHARS + 1)}), 413)


# Refused by the fake engine (service.engines.capabilities.FAKE: n and tools only), each with a 400
# naming it; the same parameters are honoured by the openai engine (tests/integration/test_openai_*.py).
UNSUPPORTED = {
    "response_format": {"type": "json_object"}, "logprobs": True, "logit_bias": {"50256": -100},
    "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"}, "store": True, "reasoning_effort": "low",
    "metadata": {"k": "v"}, "service_tier": "flex", "web_search_options": {},
}


@pytest.mark.reliability("hostile input", "an OpenAI parameter the engine cannot honour", "400 naming it, not ignored")
@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
async def test_unhonourable_parameters_are_refused(name: str) -> None:
    engine = FakeEngineClient.from_script(SCRIPT)
    async with serve(engine=engine) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi", **{name: UNSUPPORTED[name]})), 400)
        assert err["param"] == name and err["code"] == "unsupported_parameter" and name in err["message"]
    assert engine.requests == []


HONOURED_BY_FAKE = {
    "n": 2, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "parallel_tool_calls": False,
}


@pytest.mark.reliability("hostile input", "n / tools on an engine without them", "400 naming it")
@pytest.mark.parametrize("name", sorted(HONOURED_BY_FAKE))
async def test_parameters_an_engine_lacks_are_refused_for_that_engine(name: str) -> None:
    bare = FakeEngineClient.from_script(SCRIPT)
    bare.capabilities = frozenset()  # an engine that honours none of the optional parameters
    async with serve(engine=bare) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi", **{name: HONOURED_BY_FAKE[name]})), 400)
        assert err["param"] == name
    async with serve() as c:  # the scripted engine honours them
        assert (await c.post("/v1/chat/completions", json=chat("hi", **{name: HONOURED_BY_FAKE[name]}))).status_code == 200


@pytest.mark.reliability("hostile input", "a tool conversation on an engine without tools", "400 param tools")
async def test_tool_messages_need_an_engine_with_tools() -> None:
    bare = FakeEngineClient.from_script(SCRIPT)
    bare.capabilities = frozenset()
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    async with serve(engine=bare) as c:
        err = envelope(await c.post("/v1/chat/completions", json={"messages": messages}), 400)
        assert err["param"] == "tools"


@pytest.mark.reliability("hostile input", "the 'not used' value of such a parameter", "200")
async def test_neutral_values_of_unsupported_parameters_pass() -> None:
    bare = FakeEngineClient.from_script(SCRIPT)
    bare.capabilities = frozenset()
    async with serve(engine=bare) as c:
        body = chat("hi", tools=[], tool_choice="none", logprobs=False, response_format={"type": "text"}, n=1,
                    top_logprobs=0, logit_bias={}, store=False, service_tier="auto", modalities=["text"])
        assert (await c.post("/v1/chat/completions", json=body)).status_code == 200


WRONG_TYPES = {
    "max_tokens as string": {"max_tokens": "5"}, "max_tokens as float": {"max_tokens": 5.5},
    "max_tokens as bool": {"max_tokens": True}, "stream as int": {"stream": 1},
    "temperature as string": {"temperature": "0.5"}, "temperature NaN": {"temperature": float("nan")},
    "top_p Infinity": {"top_p": float("inf")}, "n = 9": {"n": 9}, "n = 0": {"n": 0},
    "max_tokens 0": {"max_tokens": 0}, "top_logprobs without logprobs": {"top_logprobs": 3},
    "top_logprobs 21": {"logprobs": True, "top_logprobs": 21}, "logit_bias key not a token id": {"logit_bias": {"a": 1}},
    "logit_bias 101": {"logit_bias": {"5": 101}}, "tool_choice required without tools": {"tool_choice": "required"},
    "tool named badly": {"tools": [{"type": "function", "function": {"name": "a b"}}]},
    "tool_choice naming no tool": {"tools": [{"type": "function", "function": {"name": "f"}}],
                                   "tool_choice": {"type": "function", "function": {"name": "g"}}},
    "reasoning_effort unknown": {"reasoning_effort": "extreme"},
    "max_tokens past the cap": {"max_tokens": 10**6}, "temperature 2.5": {"temperature": 2.5},
    "presence_penalty -3": {"presence_penalty": -3}, "stop as int": {"stop": 7},
    "5 stop sequences": {"stop": ["a", "b", "c", "d", "e"]}, "stream_options without stream":
    {"stream_options": {"include_usage": True}}, "messages empty": {"messages": []},
}


@pytest.mark.reliability("hostile input", "wrong type or out-of-range parameter", "400")
@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
async def test_parameters_are_strict_and_in_range(case: str) -> None:
    async with serve() as c:
        body = json.dumps(chat("hi", **WRONG_TYPES[case]), allow_nan=True)
        envelope(await _post_raw(c, "/v1/chat/completions", body), 400)


@pytest.mark.reliability("engine context", "64k-character prompt, 512-token engine", "400 context_length_exceeded before the guard")
async def test_prompt_longer_than_the_context_is_refused_before_the_guard() -> None:
    engine = FakeEngineClient.from_script({**SCRIPT, "max_model_len": 512})
    backend = FakeBackend()
    async with serve(backend=backend, engine=engine) as c:
        r = await c.post("/v1/chat/completions", json=chat("word " * 12_800))  # 64k chars
        err = envelope(r, 400)
        assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
        assert "512" in err["message"]
        assert backend.batches == [] and engine.requests == []  # nothing scored, nothing generated
        ok = await c.post("/v1/chat/completions", json=chat("a short prompt"))
        assert ok.status_code == 200
    assert len(engine.checked) == 2


@pytest.mark.reliability("auth", "a key from --api-keys-file guards /v1/*", "401 without it, 200 with it")
async def test_key_file_guards_the_api(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-secret\n")
    async with serve(api_keys_file=keys) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi")), 401)
        assert err["code"] == "invalid_api_key"
        ok = await c.post("/v1/chat/completions", json=chat("hi"), headers={"authorization": "Bearer k-secret"})
        assert ok.status_code == 200
