"""Helpers of the service tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("ZENNAS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DBS = ["sqlite", "postgres"]
FINISHED = ("succeeded", "failed", "cancelled")

# a search that finishes in well under a second (entropy-analytic runs in the dispatcher, ~7k/s)
SMALL = {"population": 16, "iterations": 480, "generation": 16, "checkpoint_every": 512}
# a search that runs for minutes unless cancelled
LONG = {"population": 64, "iterations": 1_000_000, "generation": 16, "checkpoint_every": 4096}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sa_url(url: str) -> str:
    return "postgresql+psycopg://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def make_engine(url: str) -> sa.Engine:
    kw: dict[str, Any] = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"poolclass": sa.NullPool}
    return sa.create_engine(sa_url(url), **kw)


def base_env(db_url: str, artifacts: Path, **extra: Any) -> dict[str, str]:
    """The environment of a server or CLI process: the caller's, minus any ZENNAS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENNAS_")}
    env.update({
        "ZENNAS_DATABASE_URL": db_url,
        "ZENNAS_ARTIFACTS_DIR": str(artifacts),
        "ZENNAS_SECRET_KEY": "test-secret-" + "0" * 32,  # the same across restarts: sessions survive them
        "ZENNAS_POLL_SECONDS": "0.2",
        "ZENNAS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({f"ZENNAS_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "zennas.cli", *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"zennas {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


class Server:
    """One replica: ``python -m zennas.cli serve`` in a new session (process group)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, dev: bool = False, dispatcher: bool = True,
                 port: int | None = None) -> None:
        self.env, self.log_path, self.dev, self.dispatcher = env, log_path, dev, dispatcher
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None

    def start(self, timeout: float = 90.0) -> Server:
        cmd = [sys.executable, "-m", "zennas.cli", "serve", "--port", str(self.port)]
        if self.dev:
            cmd.append("--dev")
        if not self.dispatcher:
            cmd.append("--no-dispatcher")
        log = open(self.log_path, "ab")  # the child keeps its own copy
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.pgid = self.proc.pid  # start_new_session: the child leads its own group
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self, tail: int | None = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
            return text[-tail:] if tail else text
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def run_dir(self) -> Path:
        """Where ``zennas serve`` records its dispatcher (pid = session id, run token, heartbeat)."""
        if self.env.get("ZENNAS_RUN_DIR"):
            return Path(self.env["ZENNAS_RUN_DIR"])
        return Path(self.env.get("ZENNAS_ARTIFACTS_DIR", "zennas-service/artifacts")).parent / "run"

    def dispatcher_pid(self) -> int | None:
        """The running dispatcher's pid (from the supervisor's record), if any."""
        import json

        assert self.proc is not None
        try:
            return int(json.loads((self.run_dir / f"dispatcher-{self.proc.pid}.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def pause(self) -> None:
        """SIGSTOP the whole replica: a stall (swap, a paused VM), its leases expire meanwhile. (The
        dispatcher runs in its own session: stopped by pid.)"""
        assert self.pgid is not None
        pid = self.dispatcher_pid()
        os.killpg(self.pgid, signal.SIGSTOP)
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.pgid is not None
        pid = self.dispatcher_pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        os.killpg(self.pgid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole replica (uvicorn, and so its dispatcher: it dies with its parent), then reap
        what the dispatcher left (its Ray), as the next ``zennas serve`` would."""
        from zennas_api.supervisor import reap_previous_runs

        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=30)
            if self.run_dir.exists():
                reap_previous_runs(self.run_dir)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM to the server process only (it drains its dispatcher); returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not exit within {timeout} s of SIGTERM:\n{self.log()}") from None

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)



def wait_state(client: httpx.Client, jid: str, states: tuple[str, ...] = FINISHED, timeout: float = 120.0,
               pred: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Poll a job until its state is one of ``states`` (and ``pred`` holds)."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/v1/searches/{jid}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in states and (pred is None or pred(job)):
            return job
        time.sleep(0.1)
    raise AssertionError(f"search {jid} not in {states} after {timeout} s; last: {job.get('state')} "
                         f"{job.get('progress', {}) and job['progress'].get('iteration')} {job.get('error')}")


def assert_problem(r: httpx.Response, status: int | tuple[int, ...], field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem document with the expected status (and ``errors[0].field``)."""
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == r.status_code and body["title"] and body["detail"], body
    if field is not None:
        assert body.get("errors"), body
        assert body["errors"][0]["field"] == field, body
    return body


def checkpointed(engine: sa.Engine, jid: str) -> int:
    """Trials the job's last checkpoint holds (0: none yet)."""
    with engine.connect() as c:
        n = c.execute(sa.text("SELECT n_trials FROM search_checkpoints WHERE search_id = :i"), {"i": jid}).scalar()
    return int(n or 0)


def wait_mid_search(client: httpx.Client, engine: sa.Engine, jid: str, n: int, deadline: float) -> None:
    """Poll until the job of ``n`` iterations runs between 20 % and 80 % with a checkpoint stored."""
    at = saved = 0
    while time.monotonic() < deadline:
        j = client.get(f"/v1/searches/{jid}").json()
        at, saved = (j.get("progress") or {}).get("iteration", 0), checkpointed(engine, jid)
        assert j["state"] in ("queued", "running"), j
        if saved > 0 and 0.2 * n <= at <= 0.8 * n:
            return
        time.sleep(0.05)
    raise AssertionError(f"never between 20 % and 80 % with a checkpoint (at {at}, saved {saved})")
