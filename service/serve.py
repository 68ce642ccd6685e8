"""``spaguard serve``: run the guarded OpenAI-compatible VLM server.

    spaguard serve                                   # embedded tiny VLM + shipped classifier
    spaguard serve --config serve.yaml --port 9000   # YAML settings, flags override
    spaguard serve --engine openai --upstream-url http://127.0.0.1:8001/v1
    spaguard serve --engine fake --model script.json # scripted engine (tests, demos)

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics.

Request limits (``service.settings``): MAX_IMAGES_PER_REQUEST images, MAX_IMAGE_BYTES per image,
MAX_IMAGE_PIXELS per image, MAX_MESSAGES messages, MAX_CHARS characters of text, MAX_TOKENS for
max_tokens, MAX_BODY_BYTES per body (413 beyond); /v1/moderations takes at most
MAX_MODERATION_INPUTS inputs per request. Flags: ``spaguard serve --help``.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from models.backends import resolve_artifact
from service.app import build_app
from service.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(argv)
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # fail before uvicorn starts, with the fix in the message, not a lifespan traceback
        resolve_artifact(settings.guard_artifact)
    except FileNotFoundError as exc:
        print(f"spaguard serve: {exc}", file=sys.stderr)
        return 2
    app = build_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0
