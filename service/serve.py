"""``spaguard serve``: run the guarded OpenAI-compatible VLM server.

    spaguard serve                                   # embedded tiny VLM + shipped classifier
    spaguard serve --config serve.yaml --port 9000   # YAML settings, flags override
    spaguard serve --engine openai --upstream-url http://127.0.0.1:8001/v1
    spaguard serve --engine fake --model script.json # scripted engine (tests, demos)

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics.

Request limits (``service.settings``): MAX_IMAGES_PER_REQUEST images, MAX_IMAGE_BYTES per image,
MAX_IMAGE_PIXELS per image, MAX_MESSAGES messages, MAX_CHARS characters of text, MAX_TOKENS for
max_tokens, MAX_BODY_BYTES per body (413 beyond); /v1/moderations takes at most
MAX_MODERATION_INPUTS inputs per request. Everything but image data has a small cap:
MAX_STOP_CHARS per stop sequence, MAX_USER_CHARS for ``user``, MAX_NAME_CHARS for a message's
``name``, MAX_MODEL_CHARS for ``model``, MAX_URL_CHARS per http(s) image URL, MAX_CONTENT_PARTS
parts per message, MAX_EXTRA_CHARS of unknown fields, MAX_JSON_DEPTH levels of nesting and
MAX_NON_IMAGE_CHARS for the whole body besides image data (``service.protocol.check_body``).
Connections: a request head must arrive within ``--http-header-timeout-s`` and its body within
``--http-body-timeout-s`` (plus a second per HTTP_BODY_MIN_RATE bytes), or the connection is
closed (``service.serving.http_timeouts``). Flags: ``spaguard serve --help``.

Bearer keys (``--api-keys``) are best given in a file (``--api-keys-file``, one per line) or in
the SPAGUARD_API_KEYS environment variable: a flag's value is visible to every local user in
``ps``, so the flag still works but logs a warning.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from models.backends import resolve_artifact
from service.app import build_app
from service.serving.http_timeouts import protocol_class
from service.settings import API_KEYS_ENV, load_settings

log = logging.getLogger("spaguard.serve")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings(args)
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if any(a == "--api-keys" or a.startswith("--api-keys=") for a in args):
        log.warning("--api-keys puts the keys in the process list (`ps` shows them to every local "
                    "user); use --api-keys-file or the %s environment variable", API_KEYS_ENV)
    try:  # fail before uvicorn starts, with the fix in the message, not a lifespan traceback
        resolve_artifact(settings.guard_artifact)
    except FileNotFoundError as exc:
        print(f"spaguard serve: {exc}", file=sys.stderr)
        return 2
    try:
        app = build_app(settings)
    except ValueError as exc:  # a bad --policies file or --db URL (service.tenancy), with its fix
        print(f"spaguard serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        http=protocol_class(settings.http_header_timeout_s, settings.http_body_timeout_s),
    )
    return 0
