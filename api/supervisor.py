"""``zennas serve``'s dispatcher supervisor: start it, watch it, restart it with back-off, reap it.

The dispatcher runs as a child process in its **own session** (``setsid``), so it and every process
it starts (the embedded Ray's GCS, raylet, agents and workers, which keep the session even where Ray
gives them their own process group) are one set, told apart from the rest of the machine by the
session id and by a per-run token in their environment (``ZENNAS_SERVICE_RUN``). A record of each
run (``<run_dir>/dispatcher-<serve pid>.json``: the dispatcher's pid = its session id, the token,
the serving process's pid and start time) lets the next ``zennas serve`` reap what a SIGKILLed one
left behind: every process of that session carrying that token, never a process picked by name.

Health: the dispatcher touches ``<run_dir>/dispatcher-<serve pid>.beat`` from its main loop
(``ZENNAS_DISPATCHER_BEAT``); :meth:`Supervisor.healthy` (``/readyz``) holds while the child is
alive and the beat is fresher than ``dispatcher_stale_seconds``. A dispatcher that exits is reaped
(its session SIGKILLed) and restarted after a back-off that doubles up to ``restart_backoff_max``
seconds and starts again at 1 s once a run has stayed up for a minute.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from zennas_api.settings import Settings

log = logging.getLogger("zennas.supervisor")

TOKEN_ENV = "ZENNAS_SERVICE_RUN"


# -- processes, from /proc (Linux) ------------------------------------------------------------
def _stat(pid: int) -> tuple[int, int, int] | None:
    """(process group, session, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
    return int(fields[2]), int(fields[3]), int(fields[19])


def _carries(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:  # gone, or another user's
        return False
    return f"{TOKEN_ENV}={token}".encode() in env.split(b"\0")


def session_members(sid: int, token: str) -> list[int]:
    """The live processes of session ``sid`` that carry ``token`` (the recorded run's own)."""
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        st = _stat(pid)
        if st is not None and st[1] == sid and _carries(pid, token):
            out.append(pid)
    return out


def reap(sid: int, token: str, timeout: float = 15.0) -> int:
    """SIGKILL every process of session ``sid`` carrying ``token``; returns how many were found.
    Repeats until none is left (a dying raylet may still start a worker) or ``timeout`` passes."""
    found: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = session_members(sid, token)
        if not pids:
            return len(found)
        for pid in pids:
            found.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            log.warning("processes of the previous dispatcher still alive after %.0f s: %s", timeout, pids)
            return len(found)
        time.sleep(0.1)


def reap_previous_runs(run_dir: Path) -> int:
    """Reap the dispatchers (and their Ray) of earlier ``zennas serve`` processes that are gone
    (killed with SIGKILL, or a crashed machine's leftovers in a reused directory)."""
    total = 0
    for rec_path in sorted(run_dir.glob("dispatcher-*.json")):
        try:
            rec = json.loads(rec_path.read_text())
            serve_pid, serve_start = int(rec["serve_pid"]), int(rec["serve_start"])
            sid, token = int(rec["sid"]), str(rec["token"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable dispatcher record %s", rec_path)
            continue
        st = _stat(serve_pid)
        if st is not None and st[2] == serve_start:  # that service is still running: not ours to reap
            continue
        n = reap(sid, token)
        if n:
            log.warning("reaped %d process(es) left by the dispatcher of a previous run (session %d)", n, sid)
        total += n
        for p in (rec_path, rec_path.with_suffix(".beat")):
            p.unlink(missing_ok=True)
    return total


class Supervisor:
    """Runs ``python -m zennas_api.dispatcher`` and keeps it running (see the module docstring)."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.run_dir = settings.runtime_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        self.record = self.run_dir / f"dispatcher-{me}.json"
        self.beat = self.run_dir / f"dispatcher-{me}.beat"
        st = _stat(me)
        self._serve_start = st[2] if st else 0
        self.env = {k: v for k, v in env.items() if k != "ZENNAS_SECRET_KEY"}  # Ray's workers inherit it
        self.env.update({"ZENNAS_SUPERVISOR_PID": str(me), "ZENNAS_DISPATCHER_BEAT": str(self.beat)})
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="dispatcher-supervisor", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        reap_previous_runs(self.run_dir)
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        token = uuid.uuid4().hex
        self.beat.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "zennas_api.dispatcher"], env={**self.env, TOKEN_ENV: token},
                                stdin=subprocess.DEVNULL, start_new_session=True)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"serve_pid": os.getpid(), "serve_start": self._serve_start, "pid": proc.pid,
                                   "sid": proc.pid, "token": token, "started": time.time()}))
        tmp.replace(self.record)
        with self._lock:
            self.proc, self.token = proc, token
        if self._stopping.is_set():  # drain() came while it was starting
            proc.send_signal(signal.SIGTERM)
        self.starts += 1
        log.info("dispatcher started (pid %d, start %d)", proc.pid, self.starts)
        return proc

    def _run(self) -> None:
        """This thread forks every dispatcher (their PR_SET_PDEATHSIG is tied to it): it lives until stop."""
        backoff = 1.0
        while not self._stopping.is_set():
            proc = self._spawn()
            t0 = time.monotonic()
            code = proc.wait()
            with self._lock:
                token = self.token
            assert token is not None
            n = reap(proc.pid, token)  # whatever it started and left (Ray workers, agents)
            if self._stopping.is_set():
                break
            up = time.monotonic() - t0
            if up >= 60:
                backoff = 1.0
            log.error("dispatcher (pid %d) exited with %s after %.0f s%s; restarting in %.0f s", proc.pid, code,
                      up, f", {n} leftover process(es) reaped" if n else "", backoff)
            print(f"zennas: dispatcher exited with {code}; restarting in {backoff:.0f} s", file=sys.stderr,
                  flush=True)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self.settings.restart_backoff_max)
        self.record.unlink(missing_ok=True)
        self.beat.unlink(missing_ok=True)

    def drain(self) -> None:
        """SIGTERM the dispatcher (it drains: checkpoints, releases its jobs, stops its Ray); no restart."""
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 120.0) -> None:
        """:meth:`drain`, wait for the dispatcher, SIGKILL it if it has not exited after ``timeout`` s,
        then reap its session."""
        self.drain()
        with self._lock:
            proc, token = self.proc, self.token
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("dispatcher did not drain within %.0f s; killing it", timeout)
                proc.kill()
        self._thread.join(timeout=30)
        if proc is not None and token is not None:
            reap(proc.pid, token)

    # -- health -----------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        """(True, "") while a dispatcher runs and its loop beat recently; else (False, why)."""
        with self._lock:
            proc = self.proc
        if self._stopping.is_set():
            return False, "the service is stopping"
        if proc is None or proc.poll() is not None:
            return False, "no dispatcher is running (it is being restarted)"
        try:
            age = time.time() - self.beat.stat().st_mtime
        except OSError:
            return False, "the dispatcher is starting"
        if age > self.settings.dispatcher_stale_seconds:
            return False, f"the dispatcher's loop has not run for {age:.0f} s"
        return True, ""

    def info(self) -> dict[str, Any]:
        with self._lock:
            proc = self.proc
        return {"pid": proc.pid if proc else None, "starts": self.starts}
