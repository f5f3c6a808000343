"""``zennas serve``: uvicorn for HTTP, plus one dispatcher process that runs the searches.

The search driver runs outside the process serving HTTP so polling stays fast while searches run.
SIGTERM (or Ctrl-C) drains: the dispatcher checkpoints and releases its jobs, then the server stops.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import uvicorn
from zennas_api.db import migrate
from zennas_api.settings import Settings


def serve(settings: Settings, *, dispatcher: bool = True, log_level: str = "info") -> None:
    migrate(settings.sqlalchemy_url)
    env = dict(os.environ, ZENNAS_DATABASE_URL=settings.database_url,
               ZENNAS_ARTIFACTS_DIR=str(settings.artifacts_dir), ZENNAS_SECRET_KEY=settings.secret_key)
    proc = subprocess.Popen([sys.executable, "-m", "zennas_api.dispatcher"], env=env) if dispatcher else None

    from zennas_api.app import create_app

    app = create_app(settings, run_migrations=False)
    # Everything imported so far (FastAPI, pydantic, SQLAlchemy, numpy, the search library: ~110k objects)
    # lives as long as the process. Freezing it keeps the cyclic GC's full collections from scanning it
    # again and again: each took 40-150 ms on a loaded 2-core machine, a pause of every request in
    # flight, and set the status poll's p99 (bench_api).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False)
    server = uvicorn.Server(config)

    def watch() -> None:  # if the dispatcher dies, say so loudly (the HTTP side keeps serving)
        if proc is not None:
            code = proc.wait()
            if code not in (0, -signal.SIGTERM) and not server.should_exit:
                print(f"zennas: dispatcher exited with {code}", file=sys.stderr)

    threading.Thread(target=watch, daemon=True).start()

    def on_term(*_: Any) -> None:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # drain searches first
        server.should_exit = True

    signal.signal(signal.SIGTERM, on_term)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    signal.signal(signal.SIGINT, on_term)
    try:
        server.run()
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
