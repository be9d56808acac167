"""Prometheus metrics of one interface (a registry per app, so tests and reloads never collide)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class InterfaceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edge_interface_requests",
            "Requests answered, by route template and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "edge_interface_request_seconds",
            "Time to answer, by route template (streams: until the browser leaves).",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.orchestrator_errors = Counter(
            "edge_interface_orchestrator_errors",
            "Failed calls to the orchestrator, by its error code (unreachable and timeout when it did not answer).",
            ["code"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts every answer by its route template (never the raw path: item ids would explode the series)."""

    def __init__(self, app: ASGIApp, metrics: InterfaceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "other"
            )
            self.metrics.requests.labels(route=name, status=str(status)).inc()
            self.metrics.request_seconds.labels(route=name).observe(time.perf_counter() - started)
