"""The dispatcher: claims queued jobs and runs their searches, outside the HTTP server's process.

Run as ``python -m zennas_api.dispatcher`` (``zennas serve`` starts and supervises one beside
uvicorn). Each claimed job runs in a thread of this process; a heartbeat thread renews the leases and
picks up cancel requests. SIGTERM drains: running searches checkpoint at their next generation
boundary and their leases are released, so another replica (or this one, restarted) resumes them.

Ray (embedded, or a cluster by address) is started once, when the first search needs it, by the
``ray-host`` thread, which lives as long as the process: Ray starts its node processes with
``PR_SET_PDEATHSIG``, which fires when the forking *thread* exits, so starting it from a job's thread
killed the embedded Ray (and, a minute later, the dispatcher) when that job ended. The main loop
touches ``$ZENNAS_DISPATCHER_BEAT`` (a file) every iteration: the supervisor's readiness check.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from zennas_api.bundle import expire_artifacts, remove_artifacts, write_bundle
from zennas_api.db import make_engine, migrate
from zennas_api.queue import Job, JobQueue
from zennas_api.settings import Settings
from zennas_api.storage import charge, release_artifact

from zennas.errors import SpecError, ZenNASError
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

    def __init__(self, engine: Engine, owner: str, *, storage_quota: int | None = None) -> None:
        super().__init__(engine, create=False)
        self.owner = owner
        self.storage_quota = storage_quota  # bytes per tenant (StorageQuotaExceeded beyond it)

    def _guard(self, connection: Any, cp: Checkpoint, nbytes: int = 0) -> None:
        if not charge(connection, cp.search_id, self.owner, nbytes, self.storage_quota):
            raise LeaseLost(cp.search_id)


class RayHost:
    """Ray for this dispatcher: started (embedded) or connected (cluster) once, on first need, by a
    thread that lives until :meth:`stop`; one :class:`RayBackend` shared by every job.

    The backend evaluates one batch at a time; jobs running at once take turns batch by batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._ready: Future[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._eval_lock = threading.Lock()

    def backend(self) -> Any:
        """The shared backend (blocks while Ray starts); raises what starting it raised."""
        with self._lock:
            failed = self._ready is not None and self._ready.done() and self._ready.exception() is not None
            if self._ready is None or failed:
                self._ready = Future()
                self._thread = threading.Thread(target=self._run, args=(self._ready,), name="ray-host", daemon=True)
                self._thread.start()
            ready = self._ready
        return _Turns(ready.result(), self._eval_lock)

    def _run(self, ready: Future[Any]) -> None:
        try:
            from zennas_workers import RayBackend, ray_init

            ray_init(self.settings.ray_address, num_cpus=self.settings.search_workers,
                     loopback=self.settings.ray_loopback)
            backend = RayBackend(num_workers=self.settings.search_workers, address=self.settings.ray_address)
        except BaseException as e:  # the job that asked fails with it; the next one tries again
            log.error("starting Ray failed: %s: %s", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            ready.set_exception(e)
            return
        log.info("Ray ready (%s)", self.settings.ray_address or "embedded")
        ready.set_result(backend)
        self._stop.wait()  # this thread forked Ray's node processes: it must outlive them
        try:
            backend.close()
        finally:
            import ray

            ray.shutdown()  # stops the node processes an embedded Ray started
            log.info("Ray stopped")

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class _Turns:
    """A backend whose ``evaluate`` calls take turns (RayBackend evaluates one batch at a time)."""

    def __init__(self, backend: Any, lock: threading.Lock) -> None:
        self._backend, self._lock = backend, lock

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._backend.evaluate(tasks))

    def close(self) -> None:  # the backend is shared: the RayHost closes it
        pass


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.sqlalchemy_url)
        self.queue = JobQueue(self.engine)
        self.owner = f"{settings.replica_name or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.store = FencedStore(self.engine, self.owner, storage_quota=settings.max_storage_per_tenant)
        self.draining = threading.Event()
        self.running: dict[str, dict[str, Any]] = {}  # job id -> {"thread", "cancel", "lost"}
        self.lock = threading.Lock()
        self.ray = RayHost(settings)
        beat = os.environ.get("ZENNAS_DISPATCHER_BEAT")
        self.beat_file = Path(beat) if beat else None
        self._last_beat = 0.0

    # -- evaluation backend (Ray), started once per process when a search needs it --------------
    def backend_for(self, spec: SearchSpec) -> Any:
        if not spec.needs_backend(spec.effective_budgets(spec.resolve_space())):
            return None
        return self.ray.backend()

    def pinned_profile(self, jid: str, spec: SearchSpec) -> Any:
        """The latency profile pinned to the job at submission (None without one). Never a file: the
        spec's ``latency.profile`` is a name here, and a job whose copy is missing fails."""
        if spec.latency.profile is None:
            return None
        from zennas.latency.profile import profile_from_dict

        pinned = self.queue.pinned_profile(jid)
        if pinned is None:
            raise SpecError(f"the latency profile {spec.latency.profile!r} this search was submitted with is not "
                            "stored with it; submit the search again", field="latency.profile")
        return profile_from_dict(json.loads(pinned[1]))  # its checksum verified (and the search's, by the search)

    def beat(self) -> None:
        """Tell the supervisor this loop is alive (at most once a second)."""
        now = time.time()
        if self.beat_file is None or now - self._last_beat < 1.0:
            return
        self._last_beat = now
        try:
            self.beat_file.touch()
        except OSError as e:
            log.warning("cannot touch %s: %s", self.beat_file, e)

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
                            progress=progress, should_stop=should_stop, progress_interval=0.25,
                            profile=self.pinned_profile(job.id, spec))
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
            self.beat()
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
            if time.time() - last_retention > min(60.0, self.settings.artifact_ttl_seconds or 60.0):
                self.expire()
                last_retention = time.time()
            self.draining.wait(self.settings.poll_seconds)
        # drain: let every running search reach its checkpoint, then release
        with self.lock:
            threads = [e["thread"] for e in self.running.values()]
        for t in threads:
            t.join()
        hb.join(timeout=5)
        self.ray.stop()

    def expire(self) -> None:
        """Housekeeping: finished jobs past ``retention_days``, bundle files past ``artifact_ttl_seconds``."""
        if self.settings.artifact_ttl_seconds is not None:
            expire_artifacts(self.settings.artifacts_dir, self.settings.artifact_ttl_seconds,
                             release=lambda jid, n: release_artifact(self.engine, jid, n))
        if self.settings.retention_days is None:
            return
        cutoff = time.time() - self.settings.retention_days * 86400
        for jid in self.queue.expired(cutoff):
            job = self.queue.get(jid)
            if job and self.queue.delete(jid, job.tenant):
                remove_artifacts(self.settings.artifacts_dir, jid)


def _die_with_parent() -> None:
    """SIGKILL this process when the ``zennas serve`` that started it dies (even by SIGKILL): a
    dispatcher never outlives its supervisor (Ray's node processes then die with it, and whatever
    is left is reaped by the next ``zennas serve``)."""
    parent = os.environ.get("ZENNAS_SUPERVISOR_PID")
    if not parent or not hasattr(os, "getppid"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != int(parent):  # it died before the prctl
        os._exit(1)


def main() -> None:
    logging.basicConfig(level=os.environ.get("ZENNAS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _die_with_parent()
    os.environ.pop("ZENNAS_SECRET_KEY", None)  # never inherited by Ray's workers (the dispatcher signs nothing)
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
