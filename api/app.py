"""The FastAPI application: routers, problem handlers, body-size limit, request metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from zennas_api import problems
from zennas_api.db import make_engine, migrate
from zennas_api.queue import JobQueue
from zennas_api.routes import console, profiles, searches, system
from zennas_api.settings import Settings

import zennas


def _metrics() -> dict[str, Any]:
    reg = CollectorRegistry()
    public = CollectorRegistry()  # what /metrics shows without the metrics token: no job figures
    return {
        "registry": reg,
        "public": public,
        "jobs": Gauge("zennas_jobs", "searches by state", ["state"], registry=reg),
        "queue_depth": Gauge("zennas_queue_depth", "queued searches", registry=reg),
        "evaluated": Gauge("zennas_candidates_evaluated", "candidates evaluated by all searches", registry=reg),
        "scraped": Gauge("zennas_last_scrape_timestamp", "time of this scrape", registry=reg),
        "latency": _also(public, Histogram(
            "zennas_request_seconds", "HTTP request latency", ["method", "route"], registry=reg,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))),
    }


def _also(registry: CollectorRegistry, collector: Any) -> Any:
    registry.register(collector)
    return collector


class LimitsAndMetrics:
    """The body-size limit and the request-latency histogram, as plain ASGI middleware.

    (Not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` wraps every request in a task
    group and memory streams, which cost more CPU than the status poll it wraps.) The latency is the
    time to the response's start (its status and headers), so a long SSE stream is not counted as one
    slow request; ``route`` is the matched route's template, "unmatched" when none matched."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, latency: Histogram) -> None:
        self.app, self.max_body_bytes, self.latency = app, max_body_bytes, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = te = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = v.decode("latin-1")
            elif k == b"transfer-encoding":
                te = v.decode("latin-1")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await problems.problem(413, "Payload too large",
                                   f"the body is {length} bytes; the limit is {self.max_body_bytes}",
                                   errors=[{"field": "body", "message": "too large"}])(scope, receive, send)
            return
        if length is None and te is not None and "chunked" in te.lower():
            # a chunked body has no length to check up front; refuse it rather than read it unbounded
            await problems.problem(411, "Length required",
                                   "send the body with a Content-Length header (chunked bodies are not accepted)",
                                   errors=[{"field": "content-length", "message": "required"}])(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                self.latency.labels(scope["method"], getattr(route, "path", "unmatched")).observe(
                    time.perf_counter() - t0)
            await send(message)

        await self.app(scope, receive, timed_send)


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or Settings()
    if run_migrations:
        migrate(settings.sqlalchemy_url)
    app = FastAPI(title="zennas", version=zennas.__version__,
                  description="Zero-shot NAS for detection backbones: submit searches, follow them, download "
                              "the chosen backbone. Errors are RFC 9457 problem documents.")
    app.state.settings = settings
    app.state.engine = make_engine(settings.sqlalchemy_url)
    app.state.queue = JobQueue(app.state.engine)
    app.state.metrics = _metrics()
    app.state.docs = searches.DocCache()
    problems.install(app)
    app.include_router(searches.router)
    app.include_router(profiles.router)
    app.include_router(system.router)
    app.include_router(console.router)  # last: the console's `/` must not shadow the API

    app.add_middleware(LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, latency=app.state.metrics["latency"])
    return app
