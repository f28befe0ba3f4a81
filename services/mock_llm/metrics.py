"""Prometheus metrics of the mock: requests by route and status, and their duration in seconds.

The metrics live in a registry of their own, not prometheus-client's global one, so nothing
else imported into the process can add series to the mock's `/metrics`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Finer than prometheus-client's defaults at the low end: an unloaded mock answers in well
# under a millisecond, and the default buckets start at 5 ms.
DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# Route label of a request that matched no route, so stray paths cannot add label values.
UNMATCHED_ROUTE = "unmatched"


class Metrics:
    """The mock's registry and its two metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests_total = Counter(
            "mock_llm_requests_total",
            "HTTP requests answered by the mock LLM, by route template and status code.",
            ("route", "status"),
            registry=self.registry,
        )
        self.request_duration_seconds = Histogram(
            "mock_llm_request_duration_seconds",
            "Time from receiving a request to sending the last byte of its response, by route.",
            ("route",),
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )

        # Labelled children by (route, status): `labels()` costs about 3 µs per call, a few
        # percent of a request at full load. Routes and statuses are few, so it stays small.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, status: int, duration_s: float) -> None:
        """Count one finished request and record its duration."""
        children = self._children.get((route, status))
        if children is None:
            children = (
                self.requests_total.labels(route, str(status)),
                self.request_duration_seconds.labels(route),
            )
            self._children[(route, status)] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(duration_s)

    async def endpoint(self, request: Request) -> Response:
        """Serve the registry in Prometheus' text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI middleware that times every HTTP request and counts it by route and status.

    Starlette's `BaseHTTPMiddleware` would be simpler but adds a task and a memory stream per
    request; this keeps the per-request cost to one closure. The duration covers a streamed
    response up to its last chunk, since the inner app returns only then.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start_s = time.perf_counter()
        # Stays 500 if the app fails before answering: Starlette's outer error handler then
        # sends a 500.
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router stores the matched route in the scope; its path is a template.
            route = scope.get("route")
            route_label = getattr(route, "path", UNMATCHED_ROUTE)
            self.metrics.observe(route_label, status, time.perf_counter() - start_s)
