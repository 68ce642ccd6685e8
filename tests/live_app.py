"""The live app on the shipped classifier (ONNX Runtime, real OCR) behind a scripted engine, in-process HTTP.

``live_client(workdir, **settings)`` is an async context manager yielding an ``httpx.AsyncClient`` whose ``app``
attribute is the app (for its state); ``settings`` are ``ServeSettings`` fields on top of the defaults below.
Meant for module-scoped fixtures: the classifier and OCR load once per module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from service.app import build_app
from service.settings import ServeSettings

SCRIPT = {"model_name": "fake-vlm", "default": {"chunks": ["Sure, ", "here ", "you ", "go."]}}


@asynccontextmanager
async def live_client(workdir: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    script = workdir / "script.json"
    script.write_text(json.dumps(SCRIPT))
    app = build_app(ServeSettings(engine="fake", model=str(script), guard_backend="onnx", guard_threads=2,
                                  **settings))
    # Start-up loads and warms the real classifier and OCR: far longer than asgi-lifespan's 5 s default.
    async with LifespanManager(app, startup_timeout=300) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as client:
            client.app = app  # type: ignore[attr-defined]  # for its state
            yield client
