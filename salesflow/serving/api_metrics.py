"""The API's Prometheus metrics (one registry per app) and the ASGI middleware every
request passes: the body-size limit (413), the model headers, and the request metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

__all__ = ["ApiMetrics", "BodyLimitAndMetrics", "body_too_large"]

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]
_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """Request counts by route and status, latency histograms, predictions, the model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "salesflow_api_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "salesflow_api_request_seconds",
            "HTTP request latency (seconds)",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "salesflow_api_predicted_series",
            "series forecast on demand",
            ["endpoint", "model_version"],
            registry=r,
        )
        self.model = Gauge(
            "salesflow_api_model", "the model served (1 for the loaded version)",
            ["name", "version"], registry=r,
        )  # fmt: skip
        self._shown: tuple[str, str] | None = None
        self._lock = threading.Lock()  # the poll thread and requests both update the gauge

    def show_model(self, name: str, version: str | None) -> None:
        """Point the model gauge at ``name``/``version`` (the old label set is removed)."""
        label = (name, version or "none")
        with self._lock:
            if label == self._shown:
                return
            if self._shown is not None:
                self.model.remove(*self._shown)
            self.model.labels(*label).set(1)
            self._shown = label

    def render(self) -> bytes:
        return generate_latest(self.registry)


def body_too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body larger than {limit:,} bytes (serving.max_body_bytes)")


class BodyLimitAndMetrics:
    """Pure ASGI middleware: refuses bodies over ``limit`` bytes (by Content-Length at once,
    while streaming otherwise), adds ``X-Model-Name``/``X-Model-Version`` to every response
    and records the request in ``metrics`` under its route template."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        metrics: ApiMetrics,
        model: Callable[[], tuple[str, str | None]],
    ) -> None:
        self.app, self.limit, self.metrics, self.model = app, limit, metrics, model

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        name, version = self.model()
        status = {"code": 500}

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                # the model as the response leaves (a reload may have swapped it meanwhile)
                now, ver = self.model()
                extra = [
                    (b"x-model-name", now.encode()),
                    (b"x-model-version", (ver or "").encode()),
                ]
                own = [h for h in message.get("headers", []) if h[0].lower() not in _MODEL_HEADERS]
                message["headers"] = [*own, *extra]
            await send(message)

        try:
            if (length := _content_length(scope)) is not None and length > self.limit:
                await _send_413(send_with_headers, self.limit, name, version)
            else:
                await self.app(scope, self._limited(receive), send_with_headers)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status["code"])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)

    def _limited(self, receive: Any) -> Any:
        seen = {"n": 0}

        async def wrapped() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                seen["n"] += len(message.get("body", b""))
                if seen["n"] > self.limit:
                    raise body_too_large(self.limit)
            return message

        return wrapped


_MODEL_HEADERS = (b"x-model-name", b"x-model-version")


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Any, limit: int, name: str, version: str | None) -> None:
    body = json.dumps(
        {"detail": body_too_large(limit).detail, "model": {"name": name, "version": version}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
