"""``zennas serve``: uvicorn for HTTP, plus one supervised dispatcher process that runs the searches.

The search driver runs outside the process serving HTTP so polling stays fast while searches run;
:class:`~zennas_api.supervisor.Supervisor` restarts it when it exits and reaps what it leaves, and
``/readyz`` answers 503 while no healthy dispatcher holds the queue. SIGTERM (or Ctrl-C) drains: the
dispatcher checkpoints and releases its jobs and stops its Ray, then the server stops.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from typing import Any

import uvicorn
from zennas_api.db import migrate
from zennas_api.settings import Settings
from zennas_api.supervisor import Supervisor


def serve(settings: Settings, *, dispatcher: bool = True, log_level: str = "info") -> None:
    logging.basicConfig(level=os.environ.get("ZENNAS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    migrate(settings.sqlalchemy_url)
    env = dict(os.environ, ZENNAS_DATABASE_URL=settings.database_url,
               ZENNAS_ARTIFACTS_DIR=str(settings.artifacts_dir), ZENNAS_RUN_DIR=str(settings.runtime_dir))
    sup = Supervisor(settings, env) if dispatcher else None

    from zennas_api.app import create_app

    app = create_app(settings, run_migrations=False)
    app.state.supervisor = sup
    # Everything imported so far (FastAPI, pydantic, SQLAlchemy, numpy, the search library: ~110k objects)
    # lives as long as the process. Freezing it keeps the cyclic GC's full collections from scanning it
    # again and again: each took 40-150 ms on a loaded 2-core machine, a pause of every request in
    # flight, and set the status poll's p99 (bench_api).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False)
    server = uvicorn.Server(config)

    def on_term(*_: Any) -> None:
        if sup is not None:
            sup.drain()  # searches checkpoint and release while the HTTP side stops
        server.should_exit = True

    signal.signal(signal.SIGTERM, on_term)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    signal.signal(signal.SIGINT, on_term)
    if sup is not None:
        sup.start()
    try:
        server.run()
    finally:
        if sup is not None:
            sup.stop(timeout=120)
