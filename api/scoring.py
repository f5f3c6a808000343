"""``POST /v1/score``'s forward passes, run in worker processes, never in the HTTP process.

A bounded pool of ``ZENNAS_SCORE_WORKERS`` processes (started on first use, kept warm): each runs one
evaluation at a time, so the HTTP process's memory and torch threads stay untouched by scoring. An
evaluation has ``ZENNAS_SCORE_TIMEOUT_SECONDS`` from the moment it is admitted, waiting for a free
worker included; when it runs out, the worker is killed (the only way to stop a forward pass) and
replaced, and the request gets a 503. A tenant has at most ``ZENNAS_MAX_SCORING_PER_TENANT``
evaluations in flight (429 beyond). Each worker caps its own address space (``RLIMIT_AS``), so an
allocation that the admission estimate did not foresee fails in the worker (503) instead of taking
the machine. Requests are admitted (:mod:`zennas.admission`) before they get here.

Processes, not threads: a thread cannot be stopped, torch's thread setting is per process, and the
memory a forward pass touched stays with the process that touched it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from zennas_api.problems import Problem

log = logging.getLogger("zennas.api.scoring")


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# what a score worker must not inherit: it signs nothing, and it runs user-chosen structures
SECRET_ENV = ("ZENNAS_SECRET_KEY", "ZENNAS_METRICS_TOKEN")
_ENV_LOCK = threading.Lock()  # the environment is process-wide: one worker start at a time hides it


def worker_main(conn: Connection, memory_cap: int | None) -> None:
    """A score worker: one evaluation per message, until the HTTP process goes away (EOF)."""
    import resource

    import torch

    from zennas.errors import ZenNASError
    from zennas.score import make_scorer
    from zennas.space.structure import Structure

    torch.set_num_threads(1)  # a score's own ``threads`` setting applies during its evaluation
    if memory_cap is not None:
        limit = _vm_size() + memory_cap  # above what the interpreter and torch already map
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    make_scorer("entropy")  # imports every score's module now, not in the first evaluation's time
    conn.send({"ready": True})
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            s = Structure.from_dict({"blocks": msg["structure"]})
            r = make_scorer(msg["score"], **msg["settings"])(s)
            out: dict[str, Any] = {"ok": r.to_dict()}
        except MemoryError as e:
            out = {"error": "memory", "message": f"MemoryError: {e}"[:300]}
        except RuntimeError as e:  # torch's allocator: "DefaultCPUAllocator: can't allocate memory"
            text = str(e)
            kind = "memory" if "alloc" in text.lower() or "memory" in text.lower() else "failed"
            out = {"error": kind, "message": f"{type(e).__name__}: {text}"[:300]}
        except ZenNASError as e:
            out = {"error": "invalid", "field": e.field, "message": e.message[:300]}
        except Exception as e:  # reported to the client as a 503 naming the structure, never a 500
            out = {"error": "failed", "message": f"{type(e).__name__}: {e}"[:300]}
        try:
            conn.send(out)
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Worker:
    proc: Any  # multiprocessing.Process
    conn: Connection
    evaluations: int = 0

    def alive(self) -> bool:
        return bool(self.proc.is_alive())

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(5)
        except Exception:  # already gone
            pass
        self.conn.close()


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


@dataclass
class ScorePool:
    workers: int
    timeout: float
    per_tenant: int
    memory_cap: int | None  # bytes of address space a worker may add after start-up (None: no cap)
    _idle: list[_Worker] = field(default_factory=list)
    _all: list[_Worker] = field(default_factory=list)
    _slots: asyncio.Semaphore | None = None
    _tenants: dict[str, int] = field(default_factory=dict)
    started: int = 0  # worker processes started so far (a test can see that nothing was)

    START_SECONDS = 120.0  # a worker's start-up (a Python process importing torch), not counted in the timeout

    def _start(self) -> _Worker:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, self.memory_cap), daemon=True, name="zennas-score")
        with _ENV_LOCK:  # a spawned process inherits os.environ: start it without the secrets
            hidden = {k: os.environ.pop(k) for k in SECRET_ENV if k in os.environ}
            try:
                proc.start()
            finally:
                os.environ.update(hidden)
        child.close()
        self.started += 1
        w = _Worker(proc, parent)
        self._all = [x for x in self._all if x.alive()] + [w]
        if not parent.poll(self.START_SECONDS):
            w.kill()
            raise _Died("the score worker did not start")
        parent.recv()  # {"ready": True}
        log.info("score worker %d started (pid %s)", self.started, proc.pid)
        return w

    def _call(self, w: _Worker | None, msg: dict[str, Any], timeout: float) -> tuple[_Worker, dict[str, Any]]:
        """In a thread: send one evaluation, wait for its answer or the deadline."""
        try:
            if w is None or not w.alive():
                if w is not None:
                    w.kill()
                w = self._start()
            w.conn.send(msg)
            if not w.conn.poll(timeout):
                w.kill()
                raise _Timeout
            out: dict[str, Any] = w.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            w.kill()
            raise _Died(str(e)) from e
        w.evaluations += 1
        return w, out

    async def run(self, tenant: str, msg: dict[str, Any]) -> dict[str, Any]:
        """The score record of one evaluation, or a :class:`Problem` (429, 503, 422)."""
        if self._tenants.get(tenant, 0) >= self.per_tenant:
            raise Problem(429, "Limit reached", f"this tenant already has {self.per_tenant} score evaluations "
                          "running (ZENNAS_MAX_SCORING_PER_TENANT); wait for one to finish", field="tenant",
                          headers={"Retry-After": "5"})
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        self._tenants[tenant] = self._tenants.get(tenant, 0) + 1
        t0 = time.monotonic()
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.timeout)
            except TimeoutError:
                raise Problem(503, "Busy", f"every score worker stayed busy for {self.timeout:g} s; try again",
                              field="structure", headers={"Retry-After": "10"}) from None
            try:
                w = self._idle.pop() if self._idle else None
                left = max(0.1, self.timeout - (time.monotonic() - t0))
                try:
                    w, out = await asyncio.to_thread(self._call, w, msg, left)
                except _Timeout:
                    raise Problem(503, "Evaluation timed out",
                                  f"the evaluation did not finish within {self.timeout:g} s "
                                  "(ZENNAS_SCORE_TIMEOUT_SECONDS) and was stopped; score a smaller structure "
                                  "or a lower score_resolution", field="structure",
                                  headers={"Retry-After": "10"}) from None
                except _Died:
                    raise Problem(503, "Evaluation failed", "the score worker died during the evaluation (out of "
                                  "memory?); it was replaced, try a smaller structure", field="structure",
                                  headers={"Retry-After": "10"}) from None
                self._idle.append(w)
            finally:
                self._slots.release()
        finally:
            self._tenants[tenant] -= 1
            if not self._tenants[tenant]:
                del self._tenants[tenant]
        if "ok" in out:
            return out["ok"]  # type: ignore[no-any-return]
        if out["error"] == "invalid":
            from zennas.errors import ScoreError

            raise ScoreError(out["message"], field=out.get("field") or "structure")
        if out["error"] == "memory":
            raise Problem(503, "Insufficient memory", f"the evaluation could not allocate its memory: "
                          f"{out['message']}; try a smaller structure or score_resolution", field="structure",
                          headers={"Retry-After": "10"})
        raise Problem(503, "Evaluation failed", out["message"], field="structure")

    def close(self) -> None:
        for w in self._all:
            if w.alive():
                w.kill()
        self._all.clear()
        self._idle.clear()
