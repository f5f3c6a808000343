"""The dispatcher: claims queued jobs and runs their searches, outside the HTTP server's process.

Run as ``python -m zennas_api.dispatcher`` (``zennas serve`` starts one beside uvicorn). Each claimed
job runs in a thread of this process; a heartbeat thread renews the leases and picks up cancel
requests. SIGTERM drains: running searches checkpoint at their next generation boundary and their
leases are released, so another replica (or this one, restarted) resumes them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from typing import Any

from sqlalchemy.engine import Engine
from zennas_api.bundle import write_bundle
from zennas_api.db import jobs, make_engine, migrate
from zennas_api.queue import Job, JobQueue
from zennas_api.settings import Settings

from zennas.errors import ZenNASError
from zennas.search import Search, SearchSpec, SearchStore
from zennas.search.store import Checkpoint

log = logging.getLogger("zennas.dispatcher")


class LeaseLost(Exception):
    """Another replica took the job over: this dispatcher's lease on it had expired."""


class FencedStore(SearchStore):
    """The search store as one dispatcher writes it: a generation (its trials and the checkpoint) is
    written only while this dispatcher still holds the job's lease, checked in the same transaction.

    The check is an UPDATE of the job row, so it locks the row: a replica claiming the job meanwhile
    waits for (PostgreSQL: skips) it, and then resumes from this very checkpoint. Without it, a
    dispatcher that stalled past its lease (CPU starvation, swap, a paused VM) went on writing trial
    rows after another replica had resumed the job from an older checkpoint; the new owner's insert
    of the same trial numbers then failed, and with it the job."""

    def __init__(self, engine: Engine, owner: str) -> None:
        super().__init__(engine, create=False)
        self.owner = owner

    def _guard(self, connection: Any, cp: Checkpoint) -> None:
        held = connection.execute(jobs.update().where(jobs.c.id == cp.search_id, jobs.c.owner == self.owner,
                                                      jobs.c.state == "running").values(owner=self.owner)).rowcount
        if not held:
            raise LeaseLost(cp.search_id)


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.sqlalchemy_url)
        self.queue = JobQueue(self.engine)
        self.owner = f"{settings.replica_name or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.store = FencedStore(self.engine, self.owner)
        self.draining = threading.Event()
        self.running: dict[str, dict[str, Any]] = {}  # job id -> {"thread", "cancel", "lost"}
        self.lock = threading.Lock()
        self._backend: Any = None

    # -- evaluation backend (Ray), created once per process when a search needs it --------------
    def backend_for(self, spec: SearchSpec) -> Any:
        if not spec.needs_backend(spec.effective_budgets(spec.resolve_space())):
            return None
        if self._backend is None:
            from zennas_workers import RayBackend, ray_init

            ray_init(self.settings.ray_address, num_cpus=self.settings.search_workers)
            self._backend = RayBackend(num_workers=self.settings.search_workers, address=self.settings.ray_address)
        return self._backend

    def run_job(self, job: Job) -> None:
        entry = self.running[job.id]
        last = [0.0]

        def progress(ev: dict[str, Any]) -> None:
            now = time.time()
            if now - last[0] >= 0.25 or ev.get("finished"):
                last[0] = now
                self.queue.set_progress(job.id, self.owner, ev)

        def should_stop() -> bool:
            return self.draining.is_set() or entry["cancel"] or entry["lost"]

        try:
            spec = SearchSpec.from_dict(job.spec)
            search = Search(spec, search_id=job.id, store=self.store, backend=self.backend_for(spec),
                            progress=progress, should_stop=should_stop, progress_interval=0.25)
            result = search.run(resume=True)
            if search.stopped:
                if entry["cancel"]:
                    self.queue.finish(job.id, self.owner, "cancelled")
                elif not entry["lost"]:
                    self.queue.release(job.id, self.owner)  # drained: resumes from its checkpoint
                return
            summary = result.summary()
            out = self.settings.artifacts_dir / job.id
            if out.exists():
                shutil.rmtree(out)
            write_bundle(out, {"id": job.id, "tenant": job.tenant, "spec": job.spec}, summary)
            progress({**(self._final_event(job.id)), "finished": True})
            self.queue.finish(job.id, self.owner, "succeeded", result=summary)
        except LeaseLost:  # another replica resumed it from our last checkpoint: leave it to them
            entry["lost"] = True
            log.warning("job %s: lease lost to another replica; stopped without writing", job.id)
        except ZenNASError as e:
            self.queue.finish(job.id, self.owner, "failed", error=f"{e.field or 'spec'}: {e.message}")
        except Exception as e:  # the job fails, the dispatcher goes on
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self.queue.finish(job.id, self.owner, "failed", error=f"{type(e).__name__}: {e}")
        finally:
            with self.lock:
                self.running.pop(job.id, None)

    def _final_event(self, jid: str) -> dict[str, Any]:
        j = self.queue.get(jid)
        return dict(j.progress or {}) if j else {}

    def heartbeat_loop(self) -> None:
        while True:
            with self.lock:
                ids = list(self.running)
            alive: dict[str, bool] | None = None
            if ids:
                try:
                    alive = self.queue.heartbeat(self.owner, ids, self.settings.lease_seconds)
                except Exception as e:  # the database is away for a moment: retry; never end the heartbeats
                    log.warning("heartbeat failed (%s: %s); retrying", type(e).__name__, str(e).splitlines()[0])
            if alive is not None:
                with self.lock:
                    for jid in ids:
                        e = self.running.get(jid)
                        if e is None:
                            continue
                        if jid not in alive:
                            e["lost"] = True  # someone else owns it now: stop without writing
                        elif alive[jid]:
                            e["cancel"] = True
            if self.draining.is_set() and not ids:
                return
            time.sleep(self.settings.heartbeat_seconds if not self.draining.is_set() else 0.2)

    def loop(self) -> None:
        hb = threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True)
        hb.start()
        last_retention = 0.0
        while not self.draining.is_set():
            claimed = None
            with self.lock:
                local = len(self.running)
            if local < self.settings.max_concurrent_searches:
                try:
                    claimed = self.queue.claim(self.owner, lease_seconds=self.settings.lease_seconds,
                                               max_concurrent=self.settings.max_concurrent_searches,
                                               max_per_tenant=self.settings.max_running_per_tenant)
                except Exception as e:  # a transient database error (locked, connection lost) must not end the dispatcher
                    log.warning("claiming a job failed (%s: %s); retrying", type(e).__name__, str(e).splitlines()[0])
            if claimed is not None:
                log.info("claimed job %s (attempt %d)", claimed.id, claimed.attempts)
                entry: dict[str, Any] = {"cancel": claimed.cancel_requested, "lost": False}
                with self.lock:
                    self.running[claimed.id] = entry
                t = threading.Thread(target=self.run_job, args=(claimed,), name=f"job-{claimed.id[:8]}", daemon=True)
                entry["thread"] = t
                t.start()
                continue
            if self.settings.retention_days is not None and time.time() - last_retention > 60:
                self.expire()
                last_retention = time.time()
            self.draining.wait(self.settings.poll_seconds)
        # drain: let every running search reach its checkpoint, then release
        with self.lock:
            threads = [e["thread"] for e in self.running.values()]
        for t in threads:
            t.join()
        hb.join(timeout=5)
        if self._backend is not None:
            self._backend.close()

    def expire(self) -> None:
        assert self.settings.retention_days is not None
        cutoff = time.time() - self.settings.retention_days * 86400
        for jid in self.queue.expired(cutoff):
            job = self.queue.get(jid)
            if job and self.queue.delete(jid, job.tenant):
                shutil.rmtree(self.settings.artifacts_dir / jid, ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=os.environ.get("ZENNAS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    migrate(settings.sqlalchemy_url)
    d = Dispatcher(settings)
    signal.signal(signal.SIGTERM, lambda *_: d.draining.set())
    signal.signal(signal.SIGINT, lambda *_: d.draining.set())
    log.info("dispatcher %s started (max %d concurrent searches)", d.owner, settings.max_concurrent_searches)
    d.loop()
    log.info("dispatcher %s drained", d.owner)


if __name__ == "__main__":
    main()
