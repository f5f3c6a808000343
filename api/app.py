"""The FastAPI application: routers, problem handlers, body-size limit, request metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Gauge, Histogram
from zennas_api import problems
from zennas_api.db import make_engine, migrate
from zennas_api.queue import JobQueue
from zennas_api.routes import console, searches, system
from zennas_api.settings import Settings

import zennas


def _metrics() -> dict[str, Any]:
    reg = CollectorRegistry()
    return {
        "registry": reg,
        "jobs": Gauge("zennas_jobs", "searches by state", ["state"], registry=reg),
        "queue_depth": Gauge("zennas_queue_depth", "queued searches", registry=reg),
        "evaluated": Gauge("zennas_candidates_evaluated", "candidates evaluated by all searches", registry=reg),
        "scraped": Gauge("zennas_last_scrape_timestamp", "time of this scrape", registry=reg),
        "latency": Histogram("zennas_request_seconds", "HTTP request latency", ["method", "route"], registry=reg,
                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)),
    }


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
    problems.install(app)
    app.include_router(searches.router)
    app.include_router(system.router)
    app.include_router(console.router)  # last: the console's `/` must not shadow the API

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return problems.problem(413, "Payload too large",
                                    f"the body is {length} bytes; the limit is {settings.max_body_bytes}",
                                    errors=[{"field": "body", "message": "too large"}])
        if length is None and "chunked" in request.headers.get("transfer-encoding", "").lower():
            # a chunked body has no length to check up front; refuse it rather than read it unbounded
            return problems.problem(411, "Length required",
                                    "send the body with a Content-Length header (chunked bodies are not accepted)",
                                    errors=[{"field": "content-length", "message": "required"}])
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        app.state.metrics["latency"].labels(request.method, getattr(route, "path", "unmatched")).observe(
            time.perf_counter() - t0)
        return response

    return app
