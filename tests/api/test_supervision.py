"""``zennas serve`` supervises its dispatcher and owns the embedded Ray it starts (issue: the
dispatcher died ~60 s after the first Ray search; orphaned Ray processes; Ray on every interface).

One real service (SQLite, embedded Ray, 1 evaluator): a forward-pass search starts Ray; its processes
(found by the dispatcher's session and run token, from the supervisor's record) listen on loopback
only and do not carry ``ZENNAS_SECRET_KEY``. Then:

* SIGKILL of the dispatcher: ``/readyz`` answers 503, then 200 once the supervisor has started a
  new one; the old run's Ray processes are reaped (all are SIGSTOPped first, so none can clean up
  after another: a raylet kills its job's workers when it can, and the race decides otherwise);
  a new Ray search succeeds;
* SIGKILL of the whole ``zennas serve`` (HTTP and, through its death signal, the dispatcher): the
  next ``zennas serve`` on the same run directory starts with none of its processes left, and reaps
  an orphaned process tree recorded as an earlier run's (sparing the processes of that session
  without the run's token, and everything outside the session);
* SIGTERM: the service exits 0 and no process of its dispatcher's session is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import Server, base_env, wait_state
from zennas_api.supervisor import TOKEN_ENV, reap_previous_runs, session_members

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


def orphan_tree(run_dir: Path, dead_serve: tuple[int, int]) -> tuple[list[int], list[int]]:
    """A session of two ``sleep`` processes carrying a run token, one more in that session without
    it, recorded as a dead service's dispatcher; plus a bystander outside it. Returns (the token
    carriers, the two that must be spared)."""
    token = uuid.uuid4().hex
    clean = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    leader = subprocess.Popen(["sh", "-c", f"sleep 600 & env -u {TOKEN_ENV} sleep 600 & exec sleep 600"],
                              env={**clean, TOKEN_ENV: token}, start_new_session=True)
    bystander = subprocess.Popen(["sleep", "600"], env=clean)
    wait_for(lambda: len(session_members(leader.pid, token)) == 2, 10, "the orphan tree started")
    carriers = session_members(leader.pid, token)
    tokenless = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in carriers
                 and Path(f"/proc/{p}/stat").exists() and session_of(int(p)) == leader.pid]
    assert len(tokenless) == 1
    (run_dir / "dispatcher-1.json").write_text(json.dumps({
        "serve_pid": dead_serve[0], "serve_start": dead_serve[1], "pid": leader.pid, "sid": leader.pid,
        "token": token, "started": time.time()}))
    threading.Thread(target=leader.wait, daemon=True).start()  # reap the zombie once it is killed
    threading.Thread(target=bystander.wait, daemon=True).start()
    _STARTED.extend((p, start_time(p)) for p in [*carriers, *tokenless, bystander.pid])
    return carriers, [*tokenless, bystander.pid]


_STARTED: list[tuple[int, str | None]] = []  # (pid, start time): a reused pid is never killed


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@pytest.fixture(autouse=True)
def _kill_started() -> Iterator[None]:
    """Whatever a test's orphan tree left (a failed test): killed by pid and start time."""
    yield
    while _STARTED:
        pid, started = _STARTED.pop()
        if started is not None and start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def test_reaping_spares_what_is_not_the_recorded_run(tmp_path: Path) -> None:
    """``reap_previous_runs`` kills the token carriers of a dead service's recorded session, and
    leaves a record whose service is alive (this process) alone."""
    me = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    orphans, spared = orphan_tree(tmp_path, dead_serve=(os.getpid(), int(me[19])))
    assert reap_previous_runs(tmp_path) == 0 and all(alive(p) for p in orphans)  # its service (we) lives
    rec = json.loads((tmp_path / "dispatcher-1.json").read_text())
    (tmp_path / "dispatcher-1.json").write_text(json.dumps({**rec, "serve_start": 1}))  # now: a dead one's
    assert reap_previous_runs(tmp_path) == 2
    wait_for(lambda: not any(alive(p) for p in orphans), 5, "the token carriers killed")
    assert all(alive(p) for p in spared)
    assert not (tmp_path / "dispatcher-1.json").exists()


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
    for pid in ray_procs:  # stopped, no Ray process can clean up after the others: only reaping removes them
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

    # -- kill -9 of the whole service: nothing of its Ray survives the next start ---------------------
    # Ray 2.58 gives its node processes and workers parent-death signals, so they die with the
    # dispatcher; what can outlive it is a process one of them started (a worker's own child). Such a
    # tree is made here, in a session recorded as an earlier run's, next to a process of the same
    # session without the run's token and one outside it: the next start kills exactly the tree.
    ray2 = members(rec2)
    assert server.pgid is not None and server.proc is not None
    os.killpg(server.pgid, signal.SIGKILL)
    server.proc.wait(timeout=30)
    wait_for(lambda: not alive(rec2["pid"]), 10, "the dispatcher dies with its supervisor")
    orphans, spared = orphan_tree(server.run_dir, dead_serve=(server.proc.pid, int(rec2["serve_start"])))
    again = spawn(env, dev=True)  # same run dir: reaps the earlier runs' leftovers before it is ready
    wait_for(lambda: not any(alive(p) for p in [*orphans, *ray2]), 5, "the earlier runs' processes reaped")
    assert all(alive(p) for p in spared)

    # -- SIGTERM: drains and leaves nothing --------------------------------------------------------
    with again.client() as c:
        jid = c.post("/v1/searches", json={**RAY_SEARCH, "seed": 3}).json()["id"]
        assert wait_state(c, jid, timeout=240)["state"] == "succeeded"
    rec3 = record(again)
    assert members(rec3)
    assert again.terminate(timeout=120) == 0
    assert not members(rec3), [cmdline(p) for p in members(rec3)]
    assert not list(again.run_dir.glob("dispatcher-*.json"))
