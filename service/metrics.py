"""Prometheus metrics, all prefixed ``guard_``, on a per-app registry.

Each app gets its own ``CollectorRegistry`` so several apps (tests) can live in one process.
``GET /metrics`` renders it with ``prometheus_client``'s real exposition format. HTTP
instrumentation excludes ``/metrics`` and ``/health`` (scrapes and probes would drown real traffic).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Geometric buckets: 1 ms .. ~65 s (x2 each step), for every duration.
DURATION_BUCKETS = tuple(0.001 * 2**i for i in range(17))
# Powers of two for batch sizes.
BATCH_BUCKETS = tuple(float(2**i) for i in range(9))
TOKEN_BUCKETS = tuple(float(2**i) for i in range(14))
UNINSTRUMENTED_PATHS = frozenset({"/metrics", "/health"})


class GuardMetrics:
    """Every metric the service exports."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "guard_request_duration_seconds",
            "Guard latency per scored item by stage (queue, inference, total)",
            ["stage"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "guard_batch_size", "Items per classifier batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "guard_queue_depth", "Items waiting in the classifier queue", registry=r
        )
        self.verdicts = Counter(
            "guard_verdict_total", "Guard verdicts by task, label and action taken",
            ["task", "label", "action"], registry=r,
        )
        self.categories = Counter(
            "guard_category_total", "Fired taxonomy nodes by task", ["task", "category"], registry=r
        )
        self.failures = Counter(
            "guard_request_failure_total", "Failures by kind", ["err"], registry=r
        )
        self.judge = Counter(
            "guard_judge_total", "Verdicts escalated to the judge model, by task and outcome (agree_safe, "
            "agree_unsafe, override_safe, override_unsafe, error_timeout, error_http, error_parse)",
            ["task", "outcome"], registry=r,
        )
        self.judge_duration = Histogram(
            "guard_judge_duration_seconds", "Judge model latency per escalated check",
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "guard_engine_time_to_first_token_seconds", "Engine time to first token",
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.early_discarded = Counter(
            "guard_early_generations_discarded_total",
            "Generations started while their prompt was scored (--prompt-check during) and discarded unread "
            "before its verdict allowed them, by why (refused: the prompt was blocked; failed: its check failed; "
            "cancelled: the client left during the check)", ["why"], registry=r,
        )
        self.tokens = Counter(
            "guard_engine_tokens_total", "Engine tokens by kind (prompt, completion)",
            ["kind"], registry=r,
        )
        self.http_requests = Counter(
            "guard_http_requests_total", "HTTP requests by route and status",
            ["method", "route", "status"], registry=r,
        )
        self.http_duration = Histogram(
            "guard_http_request_duration_seconds", "HTTP time until the response starts",
            ["route"], buckets=DURATION_BUCKETS, registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HTTPMetricsMiddleware:
    """Pure-ASGI middleware counting requests by route template and final status.

    Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses are not buffered.
    """

    def __init__(self, app: ASGIApp, metrics: GuardMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNINSTRUMENTED_PATHS:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self.metrics.http_duration.labels(_route(scope)).observe(
                    time.perf_counter() - start
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.http_requests.labels(
                scope["method"], _route(scope), str(status["code"])
            ).inc()


def _route(scope: Scope) -> str:
    """The matched route template, so label cardinality stays bounded (unknown paths → other)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"
