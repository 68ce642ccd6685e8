"""Engine factory: ``build_engine(EngineConfig)`` picks the implementation by ``config.kind``.

Implementations are imported lazily so that, e.g., the transformers engine never imports vLLM.
"""

from __future__ import annotations

import typing

from service.engines.base import EngineClient, EngineConfig, EngineKind

ENGINE_KINDS: tuple[EngineKind, ...] = typing.get_args(EngineKind)


def build_engine(config: EngineConfig) -> EngineClient:
    """Return an unopened engine for ``config``; open it with ``async with``."""
    if config.kind == "transformers":
        from service.engines.hf import TransformersEngine

        return TransformersEngine(config)
    if config.kind == "openai":
        from service.engines.openai_upstream import OpenAIUpstreamEngine

        return OpenAIUpstreamEngine(config)
    if config.kind == "vllm":
        from service.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    if config.kind == "fake":
        from service.engines.fake import FakeEngineClient

        return FakeEngineClient.from_config(config)
    raise ValueError(f"unknown engine kind {config.kind!r}; expected one of {ENGINE_KINDS}")
