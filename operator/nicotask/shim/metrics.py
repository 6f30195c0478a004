"""The shim's request metrics and its /metrics endpoint.

  nicotask_shim_requests_total{method, route, status}         requests answered
  nicotask_shim_request_duration_seconds{method, route}       their latency
  nicotask_shim_requests_in_flight                            requests being served

`route` is the route's template (`/v2/org/{org}/nico/task/{id}/cancel`), never
the raw path, so task ids do not become label values; requests no route
matched count as `route="(unmatched)"`. Each app has its own registry (tests
build many apps in one process). /metrics needs no token, like /healthz.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UNMATCHED = "(unmatched)"


class ShimMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "nicotask_shim_requests",
            "HTTP requests answered by the shim, by route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nicotask_shim_request_duration_seconds",
            "Shim request latency, by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "nicotask_shim_requests_in_flight",
            "Requests being served",
            registry=self.registry,
        )


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    """Pure ASGI middleware: the route is known once the router ran (scope["route"])."""

    def __init__(self, app: ASGIApp, metrics: ShimMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what the client gets if the app raises before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route, method = route_template(scope), scope.get("method", "")
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=route).observe(
                time.monotonic() - started
            )


def install(app: FastAPI, metrics: ShimMetrics | None = None) -> ShimMetrics:
    """Count every request of `app` and serve GET /metrics."""
    metrics = metrics or ShimMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Any:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    return metrics
