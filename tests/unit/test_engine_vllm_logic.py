"""VLLMEngine logic that runs without vLLM: parameter mapping, error mapping, the clear error when
vllm is missing. The real in-process run is tests/integration/test_vllm_inprocess.py."""

from __future__ import annotations

import importlib.util

import pytest

from service.engines import build_engine
from service.engines.base import (
    EngineBadRequest,
    EngineConfig,
    EngineError,
    EngineUnavailable,
    SamplingParams,
)
from service.engines.vllm_engine import VLLMEngine, map_vllm_error, sampling_kwargs


def test_sampling_kwargs_carry_every_param() -> None:
    params = SamplingParams(max_tokens=9, temperature=0.0, top_p=0.5, stop=("x",), seed=4, presence_penalty=0.1)
    assert sampling_kwargs(params) == {
        "max_tokens": 9, "temperature": 0.0, "top_p": 0.5, "stop": ["x"], "seed": 4,
        "presence_penalty": 0.1, "frequency_penalty": 0.0,
    }  # fmt: skip


def _error_class(name: str, base: type = Exception) -> type:
    return type(name, (base,), {})


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(_error_class("EngineDeadError")("boom"), EngineUnavailable),
     (_error_class("VLLMValidationError", _error_class("VLLMClientError"))("too long"), EngineBadRequest),
     (ValueError("prompt too long"), EngineBadRequest),
     (RuntimeError("cuda"), EngineError)],
)  # fmt: skip
def test_vllm_errors_map_by_class(exc: Exception, expected: type) -> None:
    mapped = map_vllm_error(exc)
    assert type(mapped) is expected and str(exc) in str(mapped)


def test_factory_builds_it_and_a_model_is_required() -> None:
    engine = build_engine(EngineConfig(kind="vllm", model="org/m", served_model_name="m"))
    assert isinstance(engine, VLLMEngine) and engine.model_name == "m" and engine.random_weights is False
    with pytest.raises(ValueError, match="needs a model"):
        VLLMEngine(EngineConfig(kind="vllm"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
async def test_opening_without_vllm_is_a_clear_error() -> None:
    engine = VLLMEngine(EngineConfig(kind="vllm", model="org/m"))
    with pytest.raises(EngineUnavailable, match="make vllm-venv"):
        async with engine:
            pass
    with pytest.raises(EngineUnavailable, match="not open"):
        await engine.check_health()
