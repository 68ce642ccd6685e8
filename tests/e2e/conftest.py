"""The hardened live server the hostile-input, fuzzing and slow-client tests share (one start per
session): ``spaguard serve`` as a subprocess on 127.0.0.1 with the scripted engine and the shipped
classifier (real ONNX Runtime + OCR: odd images must not make *it* fail), or a tiny artifact
when the shipped one has not been built. HTTP read timeouts are short (``HTTP_TIMEOUT_S``) so the
slow-client tests finish quickly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.serve_process import SHIPPED_ARTIFACT, spaguard_server, tiny_guard_artifact

HTTP_TIMEOUT_S = 2.0
HARDENED_SCRIPT = {
    "model_name": "scripted-vlm",
    "max_model_len": 512,
    "responses": [{"match": "chem", "chunks": ["Mix ", "bleach ", "and ", "ammonia."]}],
    "default": {"chunks": ["Hello", " there", ", friend."]},
}


@pytest.fixture(scope="session")
def hardened_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("hardened")
    script = root / "script.json"
    script.write_text(json.dumps(HARDENED_SCRIPT))
    if (SHIPPED_ARTIFACT / "config.json").is_file():
        guard = ["--guard-threads", "1"]
    else:
        artifact = tiny_guard_artifact(root, prompt=False, response=False)
        guard = ["--guard-backend", "torch", "--guard-artifact", str(artifact), "--guard-threads", "1"]
    args = ["--engine", "fake", "--model", str(script), *guard,
            "--http-header-timeout-s", str(HTTP_TIMEOUT_S), "--http-body-timeout-s", str(HTTP_TIMEOUT_S)]
    with spaguard_server(args, root / "serve.log", timeout_s=300) as base:
        yield base

