"""``zennas serve`` supervises its dispatcher and owns the embedded Ray it starts (issue: the
dispatcher died ~60 s after the first Ray search; orphaned Ray processes; Ray on every interface).

One real service (SQLite, embedded Ray, 1 evaluator): a forward-pass search starts Ray; its processes
(found by the dispatcher's session and run token, from the supervisor's record) listen on loopback
only and do not carry ``ZENNAS_SECRET_KEY``. Then:

* SIGKILL of the dispatcher: ``/readyz`` answers 503, then 200 once the supervisor has started a
  new one; the old run's Ray processes are reaped (one evaluator is SIGSTOPped first, so it cannot
  notice its raylet dying and would otherwise stay forever); a new Ray search succeeds;
* SIGKILL of the whole ``zennas serve`` (HTTP and, through its death signal, the dispatcher) with a
  SIGSTOPped evaluator: the evaluator is orphaned; the next ``zennas serve`` on the same run
  directory reaps it before it is ready;
* SIGTERM: the service exits 0 and no process of its dispatcher's session is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import Server, base_env, wait_state
from zennas_api.supervisor import session_members

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

RAY_SEARCH = {"space": "detection-k1kxk1", "score": "entropy", "score_settings": {"resolution": 32},
              "resolution": 480, "budgets": {"flops": 1.88e10, "layers": 91}, "population": 8, "iterations": 16,
              "generation": 8, "seed": 1}
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def record(server: Server) -> dict[str, Any]:
    assert server.proc is not None
    return dict(json.loads((server.run_dir / f"dispatcher-{server.proc.pid}.json").read_text()))


def members(rec: dict[str, Any]) -> list[int]:
    return session_members(int(rec["sid"]), str(rec["token"]))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def evaluators(rec: dict[str, Any]) -> list[int]:
    return [p for p in members(rec) if cmdline(p).startswith("ray::Evaluator")]


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def readyz(server: Server) -> int:
    try:
        return httpx.get(server.url + "/readyz", timeout=5).status_code
    except httpx.TransportError:
        return -1


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A private, short Ray temp dir (its socket paths must stay under 107 characters), removed after."""
    d = Path(f"/tmp/zs_{uuid.uuid4().hex[:8]}")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_supervised_dispatcher_owns_its_ray(spawn: Callable[..., Server], tmp_path: Path, ray_tmp: Path) -> None:
    import psutil

    env = base_env(f"sqlite:///{tmp_path / 'z.db'}", tmp_path / "artifacts", search_workers=1,
                   restart_backoff_max=2)
    env["RAY_TMPDIR"] = str(ray_tmp)
    server = spawn(env, dev=True)
    with server.client() as c:
        jid = c.post("/v1/searches", json=RAY_SEARCH).json()["id"]
        assert wait_state(c, jid, timeout=240)["state"] == "succeeded"
    rec = record(server)
    assert rec["pid"] == server.dispatcher_pid()
    ray_procs = members(rec)
    names = " ".join(cmdline(p) for p in ray_procs)
    assert "gcs_server" in names and "raylet" in names and evaluators(rec), names
    for pid in [rec["pid"], *ray_procs]:  # the secret key is not in the dispatcher's or Ray's environment
        env_bytes = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"ZENNAS_SECRET_KEY=" not in env_bytes, cmdline(pid)
    listening = []
    for pid in ray_procs:
        try:
            p = psutil.Process(pid)
            conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") else p.connections(kind="inet")
        except psutil.Error:
            continue
        listening += [(cmdline(pid)[:40], c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening and all(ip in LOOPBACK for _, ip, _ in listening), listening

    # -- the dispatcher dies: /readyz is honest, the supervisor restarts it and reaps its Ray ------
    stopped = evaluators(rec)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    os.kill(rec["pid"], signal.SIGKILL)
    wait_for(lambda: readyz(server) == 503, 10, "/readyz 503 after the dispatcher died")
    wait_for(lambda: readyz(server) == 200, 60, "/readyz 200 after the restart")
    rec2 = record(server)
    assert rec2["pid"] != rec["pid"] and rec2["token"] != rec["token"]
    wait_for(lambda: not any(alive(p) for p in [*ray_procs, rec["pid"]]), 30, "the old run's Ray reaped")
    assert "restarting in" in server.log(tail=None)
    with server.client() as c:
        jid = c.post("/v1/searches", json={**RAY_SEARCH, "seed": 2}).json()["id"]
        assert wait_state(c, jid, timeout=240)["state"] == "succeeded"
    assert server.dispatcher_pid() == rec2["pid"]  # no restart but the one we caused

    # -- kill -9 of the whole service leaves an orphan; the next start reaps it ---------------------
    orphans = evaluators(rec2)
    assert orphans
    for pid in orphans:
        os.kill(pid, signal.SIGSTOP)
    assert server.pgid is not None and server.proc is not None
    os.killpg(server.pgid, signal.SIGKILL)
    server.proc.wait(timeout=30)
    wait_for(lambda: not alive(rec2["pid"]), 10, "the dispatcher dies with its supervisor")
    time.sleep(1.0)
    assert all(alive(p) for p in orphans), "the stopped evaluator should outlive its raylet (the orphan case)"
    again = spawn(env, dev=True)  # same run dir: reaps the orphans before it is ready
    wait_for(lambda: not any(alive(p) for p in orphans), 5, "orphans reaped at start")

    # -- SIGTERM: drains and leaves nothing --------------------------------------------------------
    with again.client() as c:
        jid = c.post("/v1/searches", json={**RAY_SEARCH, "seed": 3}).json()["id"]
        assert wait_state(c, jid, timeout=240)["state"] == "succeeded"
    rec3 = record(again)
    assert members(rec3)
    assert again.terminate(timeout=120) == 0
    assert not members(rec3), [cmdline(p) for p in members(rec3)]
    assert not list(again.run_dir.glob("dispatcher-*.json"))
