"""``build_app(settings)``: the guarded OpenAI-compatible FastAPI app.

Nothing is built at import time. ``build_app`` adds routers, middleware and exception handlers;
the lifespan loads the harm classifier (``models.backends.load_backend``, the service's only door
into ``models``), opens the engine (``async with``: guaranteed shutdown), starts the classifier
batcher and stores the handlers on ``app.state``. Tests pass ``engine=`` / ``backend=`` to use
fakes.

Middleware (pure ASGI, outermost first): HTTP metrics (not on /metrics, /health), then the
request gate: bodies over ``MAX_BODY_BYTES`` → 413, missing/wrong bearer key on /v1/* → 401
when ``api_keys`` is set, then (when ``ServeSettings.tenancy_config()`` asks for it) the tenancy
(``service.tenancy.middleware``): tenant keys, per-request policy, rate limits, operator-endpoint
keys and the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.backends import GuardInput, ScoringBackend, Verdict, load_backend, segmenter_for
from service.batching import DynamicBatcher
from service.engines import build_engine
from service.engines.base import EngineClient
from service.errors import APIError, PayloadTooLarge, Unauthorized, envelope
from service.errors import register_error_handlers
from service.guard import Guard
from service.judge import JudgeClient
from service.images import RemoteImageFetcher
from service.metrics import GuardMetrics, HTTPMetricsMiddleware
from service.routes import chat as chat_routes
from service.routes import completions as completions_routes
from service.routes import health as health_routes
from service.routes import models as models_routes
from service.operator import page as operator_page
from service.routes import moderations as moderations_routes
from service.serving.chat import ServingChat
from service.serving.moderations import ServingModerations
from service.settings import MAX_BODY_BYTES, ServeSettings
from service.tenancy.middleware import Tenancy, TenancyMiddleware
from service.warmup import warm_up

log = logging.getLogger("spaguard.app")


def build_app(
    settings: ServeSettings,
    *,
    engine: EngineClient | None = None,
    backend: ScoringBackend | None = None,
) -> FastAPI:
    """The app for ``settings``; ``engine``/``backend`` override what the settings would build."""
    metrics = GuardMetrics()
    tenancy_config = settings.tenancy_config()
    # Built here, not in the lifespan: a bad policy file or --db URL stops the start with its message.
    tenancy = Tenancy.from_config(tenancy_config, settings.guard_artifact) if tenancy_config else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backend is not None:
            scorer = backend
        else:  # loaded here: warm it too, so readiness means the first image is not slow
            scorer = await asyncio.to_thread(load_guard, settings)
            try:
                await asyncio.to_thread(warm_up, scorer)
            except RuntimeError:
                if settings.fail_policy == "closed":
                    raise  # a guard that cannot score would refuse every request: say so at start
                # fail-open chose availability; requests that hit the failure pass and are counted
                log.error("guard warm-up failed; serving anyway because --fail-policy open")
        client = engine if engine is not None else build_engine(settings.engine_config())
        async with _tenancy_running(tenancy), client:
            batcher = _make_batcher(settings, scorer, metrics)
            batcher.start()
            try:
                _init_state(app, settings, client, scorer, batcher, metrics)
                if client.random_weights:
                    log.warning("engine model %s has RANDOM WEIGHTS (demo default); its answers are "
                                "noise", client.model_name)
                log.info("serving %s (guard %s, mode %s)", app.state.serving_chat.model_name,
                         scorer.name, settings.guard_mode)
                yield
            finally:
                await batcher.stop()
                if getattr(app.state, "judge", None) is not None:
                    await app.state.judge.aclose()

    app = FastAPI(title="SPA-Guard", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.tenancy = tenancy
    register_error_handlers(app)
    for routes in (chat_routes, completions_routes, moderations_routes, models_routes, health_routes):
        routes.attach_router(app)
    if tenancy is not None and tenancy.has_operator_keys:  # the page exists only behind a key
        operator_page.attach_router(app)
    if tenancy is not None:  # innermost: its scope (tenant, policy) must reach the routes' context
        app.add_middleware(TenancyMiddleware, tenancy=tenancy)
    app.add_middleware(RequestGateMiddleware, api_keys=settings.bearer_keys())
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)
    return app


def load_guard(settings: ServeSettings) -> ScoringBackend:
    """The harm classifier named by the settings (blocking; runs in a thread)."""
    return load_backend(
        settings.guard_backend,
        settings.guard_artifact,
        threads=settings.guard_threads,
        max_batch_size=settings.max_batch_size,
        spin=settings.guard_spin,
        device=settings.guard_device,
        triton_url=settings.triton_url,
        timeout_s=settings.guard_timeout_s,
    )


def _make_batcher(
    settings: ServeSettings, scorer: ScoringBackend, metrics: GuardMetrics
) -> DynamicBatcher[GuardInput, Verdict]:
    def on_batch(size: int, depth: int) -> None:
        metrics.batch_size.observe(size)
        metrics.queue_depth.set(depth)

    return DynamicBatcher.from_config(
        scorer.score,
        settings.batcher_config(scorer.max_batch_size),
        cost=lambda item: len(item.images),  # the image budget (OCR + vision dominate)
        on_batch=on_batch,
    )


def _init_state(
    app: FastAPI,
    settings: ServeSettings,
    engine: EngineClient,
    scorer: ScoringBackend,
    batcher: DynamicBatcher[GuardInput, Verdict],
    metrics: GuardMetrics,
) -> None:
    policy = settings.guard_policy()
    fetcher = None
    if settings.remote_images:
        fetcher = RemoteImageFetcher(
            settings.remote_image_hosts,
            settings.remote_image_max_bytes,
            settings.remote_image_timeout_s,
        )
    # The artifact's token budget sizes the windows; chat and moderation cut text alike.
    segmenter = segmenter_for(settings.guard_artifact, image_reading=settings.guard_image_reading)
    judge_config = settings.judge_config()
    judge = JudgeClient(judge_config) if judge_config else None
    app.state.judge = judge  # closed by the lifespan
    guard = Guard(batcher, policy, metrics, segmenter, judge)
    state = app.state
    state.engine, state.backend, state.batcher, state.guard = engine, scorer, batcher, guard
    state.guard_backend_name = scorer.name
    state.serving_chat = ServingChat(
        engine, guard, metrics,
        model_name=settings.served_model_name,
        request_timeout_s=settings.request_timeout_s,
        fetcher=fetcher,
        prompt_check=settings.prompt_check,
    )
    # Moderation shares the batcher and metrics with chat, so its work joins the same batches.
    moderation_guard = Guard(batcher, policy.for_moderation(), metrics, segmenter)
    moderation_guard.follows_tenant_policy = False  # a moderation answer always annotates and fails closed
    state.serving_moderations = ServingModerations(moderation_guard, fetcher=fetcher)


@contextlib.asynccontextmanager
async def _tenancy_running(tenancy: Tenancy | None) -> AsyncIterator[None]:
    """The policy watcher and SIGHUP reload while serving; the database closed at the end."""
    if tenancy is None:
        yield
        return
    watcher = asyncio.create_task(tenancy.watch_policies())
    loop = asyncio.get_running_loop()
    hup = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, tenancy.policies.reload, True))
        hup = True
    try:
        yield
    finally:
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        tenancy.close()


class RequestGateMiddleware:
    """413 for bodies over ``MAX_BODY_BYTES`` (declared or streamed); 401 without a valid key."""

    def __init__(self, app: ASGIApp, api_keys: tuple[str, ...] = ()) -> None:
        self.app = app
        self.api_keys = tuple(k.encode() for k in api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.api_keys and scope["path"].startswith("/v1/") and not self._authorized(headers):
            await _send_error(send, Unauthorized("missing or invalid API key"))
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _send_error(send, PayloadTooLarge(f"body larger than {MAX_BODY_BYTES} bytes"))
            return
        await self.app(scope, _capped(receive), send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return any(hmac.compare_digest(token.strip(), key) for key in self.api_keys)


def _capped(receive: Receive) -> Receive:
    """A ``receive`` that fails with 413 once the streamed body exceeds the cap."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                # An HTTPException passes FastAPI's body parsing unchanged (others become 400).
                raise HTTPException(413)
        return message

    return wrapped


async def _send_error(send: Send, exc: APIError) -> None:
    body = envelope(exc).model_dump_json().encode()
    headers: list[Any] = [(b"content-type", b"application/json"),
                          (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
