"""In-process app with the real classifier runtime: ``build_app`` loads the guard itself through
``models.backends.load_backend`` (torch backend, tiny artifacts calibrated to flag all / none)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import build_app
from service.engines.fake import FakeEngineClient
from service.settings import ServeSettings
from tests.e2e.serve_process import tiny_guard_artifact
from tests.tiny import astronaut_png

SCRIPT = {"model_name": "fake-vlm", "default": {"chunks": ["A ", "photo ", "of ", "space."]}}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guard")
    (root / "script.json").write_text(json.dumps(SCRIPT))
    return {
        "script": root / "script.json",
        "none": tiny_guard_artifact(root, prompt=False, response=False),
        "response": tiny_guard_artifact(root, prompt=False, response=True),
    }


async def _post(artifact: Path, script: Path, body: dict, **settings) -> httpx.Response:
    app = build_app(ServeSettings(engine="fake", model=str(script), guard_backend="torch",
                                  guard_artifact=artifact, guard_threads=1, **settings))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/health")).status_code == 200
            return await client.post("/v1/chat/completions", json=body)


def _image_body() -> dict:
    import base64

    url = "data:image/png;base64," + base64.b64encode(astronaut_png()).decode()
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


async def test_real_backend_allows_and_annotates(artifacts: dict[str, Path]) -> None:
    r = await _post(artifacts["none"], artifacts["script"], _image_body(), guard_mode="annotate")
    assert r.status_code == 200
    safety = r.json()["safety"]
    assert safety["prompt"]["flagged"] is False and safety["response"]["flagged"] is False
    assert 0.0 <= safety["prompt"]["unsafe_prob"] <= 1.0
    assert r.json()["choices"][0]["message"]["content"] == "A photo of space."


async def test_real_backend_blocks_flagged_response(artifacts: dict[str, Path]) -> None:
    r = await _post(artifacts["response"], artifacts["script"], _image_body())
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    r = await _post(artifacts["response"], artifacts["script"], _image_body(), block_style="error")
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"


async def test_startup_warms_the_guard_before_serving(artifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.app as app_module

    warmed: list[object] = []
    real = app_module.warm_up
    monkeypatch.setattr(app_module, "warm_up", lambda scorer: warmed.append(scorer) or real(scorer))
    settings = ServeSettings(engine="fake", model=str(artifacts["script"]), guard_backend="torch",
                             guard_artifact=artifacts["none"], guard_threads=1)
    app = build_app(settings)
    async with LifespanManager(app):
        assert warmed == [app.state.backend]  # the loaded guard was warmed before the app served
        assert app.state.backend.model.featurizer.ocr._engine is not None  # OCR (and OpenVINO) built


@pytest.mark.parametrize("fail_policy", ["closed", "open"])
async def test_warm_up_failure_follows_the_fail_policy(artifacts, monkeypatch: pytest.MonkeyPatch,
                                                      fail_policy: str) -> None:
    import service.app as app_module

    def broken(scorer: object) -> float:
        raise RuntimeError("guard warm-up failed: ocr model file missing")

    monkeypatch.setattr(app_module, "warm_up", broken)
    app = build_app(ServeSettings(engine="fake", model=str(artifacts["script"]), guard_backend="torch",
                                  guard_artifact=artifacts["none"], guard_threads=1, fail_policy=fail_policy))
    if fail_policy == "closed":
        with pytest.raises(RuntimeError, match="ocr model file missing"):
            async with LifespanManager(app):
                pass
    else:
        async with LifespanManager(app):
            assert app.state.backend is not None  # served anyway
