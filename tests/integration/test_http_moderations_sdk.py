"""``spaguard serve`` as a subprocess answering the official ``openai`` client's
``client.moderations.create``: the SDK parses our response (aliased category names such as
``harassment/threatening``), text and image inputs, our extra ``spa_vl`` field, and SDK errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.serve_process import spaguard_server, tiny_guard_artifact
from tests.fakes import png_data_url
from tests.tiny import astronaut_png

# Starting the subprocess server (import, artifact, lifespan) takes ~45 s on the 2-core box.
pytestmark = pytest.mark.slow

SCRIPT = {"model_name": "scripted-vlm", "default": {"chunks": ["Hello."]}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mod_sdk")
    (root / "script.json").write_text(json.dumps(SCRIPT))
    artifact = tiny_guard_artifact(root, prompt=True, response=False)  # flags every input
    args = ["--engine", "fake", "--model", str(root / "script.json"), "--guard-backend", "torch",
            "--guard-artifact", str(artifact), "--guard-threads", "1"]
    with spaguard_server(args, root / "serve.log") as base:
        yield base


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


def test_sdk_parses_text_moderation(server: str) -> None:
    out = _client(server).moderations.create(model="omni-moderation-latest",
                                             input=["first text", "second text"])
    assert out.id.startswith("modr-") and out.model == "spa-guard-moderation"
    assert len(out.results) == 2
    res = out.results[0]
    assert res.flagged is True
    # Aliased fields parse into the SDK's attributes.
    assert isinstance(res.categories.harassment_threatening, bool)
    assert isinstance(res.categories.illicit_violent, bool)
    assert 0.0 <= res.category_scores.self_harm_instructions <= 1.0
    assert res.category_applied_input_types.violence == ["text"]
    assert res.model_extra["spa_vl"]["flagged"] is True


def test_sdk_multimodal_input(server: str) -> None:
    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": png_data_url(astronaut_png())}}]
    out = _client(server).moderations.create(input=parts)  # type: ignore[arg-type]
    (res,) = out.results
    assert res.category_applied_input_types.sexual == ["text", "image"]
    assert isinstance(res.category_scores.violence_graphic, float)


def test_sdk_raises_typed_errors(server: str) -> None:
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as bad:
        client.moderations.create(input="")
    assert bad.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.moderations.create(input="hi", model="gpt-4o")
