"""Kill and restart, on both databases: a search killed mid-way (SIGKILL to the whole replica) resumes
from its last checkpoint when the service comes back, and ends with exactly the result of an
uninterrupted run of the same spec and seed."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from service_helpers import DBS, base_env, checkpointed, make_engine, wait_mid_search, wait_state

pytestmark = pytest.mark.slow

# ~10-15 s at the ~4-7k candidates/s a shared 2-core machine gives; a checkpoint every 2048 trials
SPEC = {"population": 64, "iterations": 60_000, "generation": 16, "checkpoint_every": 2048, "seed": 11}

_pool = ThreadPoolExecutor(max_workers=1)
_refs: dict[str, Future[dict[str, Any]]] = {}
_lock = threading.Lock()


def reference(spec: dict[str, Any]) -> Future[dict[str, Any]]:
    """The uninterrupted run of ``spec`` (the stored job spec), in this process, computed once."""
    from zennas.search import SearchSpec, run_search

    key = json.dumps(spec, sort_keys=True)
    with _lock:
        if key not in _refs:
            _refs[key] = _pool.submit(lambda: run_search(SearchSpec.from_dict(spec)).summary())
        return _refs[key]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", DBS)
def test_sigkill_mid_search_then_restart_resumes_exactly(kind: str, databases: Any, spawn: Any, tmp_path: Any) -> None:
    db_url = databases.new(kind)
    env = base_env(db_url, tmp_path / "artifacts", dev_mode="true", lease_seconds=3, heartbeat_seconds=0.5)
    engine = make_engine(db_url)
    try:
        first = spawn(env)
        with first.client() as c:
            r = c.post("/v1/searches", json=SPEC)
            assert r.status_code == 202, r.text
            job = r.json()
            jid = job["id"]
        ref = reference(job["spec"])  # runs beside the service meanwhile

        # wait until it is between 20 % and 80 % done, with at least one checkpoint stored
        n = SPEC["iterations"]
        deadline = time.monotonic() + 120
        with first.client() as c:
            wait_mid_search(c, engine, jid, n, deadline)
        first.kill()  # SIGKILL: uvicorn and the dispatcher die mid-generation, no drain
        assert not first.alive()
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT state, attempts FROM jobs WHERE id = :i"), {"i": jid}).one()
        assert tuple(row) == ("running", 1)  # the dead owner's lease is all that is left
        saved_at_kill = checkpointed(engine, jid)
        assert 0 < saved_at_kill < n

        # a fresh replica on the same database takes the job over once the lease expires
        second = spawn(env)
        with second.client() as c:
            done = wait_state(c, jid, timeout=180)
        assert done["state"] == "succeeded", done
        assert done["attempts"] >= 2
        result = done["result"]
        assert result["counts"]["trials"] == n
        with engine.connect() as conn:
            total, distinct, lo, hi = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT number), min(number), max(number) FROM search_trials "
                "WHERE search_id = :i"), {"i": jid}).one()
        assert (total, distinct, lo, hi) == (n, n, 0, n - 1)

        expected = ref.result(timeout=240)
        assert result["best"]["structure"] == expected["best"]["structure"]
        assert result["best"]["score"] == expected["best"]["score"]
        assert result["counts"] == expected["counts"]
        assert result["best_curve"] == [list(p) for p in expected["best_curve"]]
        with second.client() as c:
            assert c.get(f"/v1/searches/{jid}/backbone", params={"format": "json"}).json() == \
                expected["best"]["structure"]
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", DBS)
def test_stalled_owner_is_fenced_off(kind: str, databases: Any, spawn: Any, tmp_path: Any) -> None:
    """A replica that stalls past its lease (SIGSTOP) while another takes its search over must not
    write to the search when it wakes up: the job still succeeds, exactly once, with the
    uninterrupted result (without fencing, the two owners' trial rows collide and the job fails)."""
    db_url = databases.new(kind)
    engine = make_engine(db_url)

    def env(name: str) -> dict[str, str]:
        return base_env(db_url, tmp_path / "artifacts", dev_mode="true", lease_seconds=3, heartbeat_seconds=0.5,
                        replica_name=name)

    def owner(jid: str) -> tuple[str, str, int]:
        with engine.connect() as conn:
            state, own, attempts = conn.execute(sa.text("SELECT state, owner, attempts FROM jobs WHERE id = :i"),
                                                {"i": jid}).one()
        return state, (own or "").split(":", 1)[0], attempts

    try:
        a = spawn(env("A"))
        with a.client() as c:
            job = c.post("/v1/searches", json=SPEC).json()
        jid = job["id"]
        ref = reference(job["spec"])
        with a.client() as c:
            wait_state(c, jid, ("running",), timeout=120,
                       pred=lambda j: (j["progress"] or {}).get("iteration", 0) >= 0.15 * SPEC["iterations"])
        assert checkpointed(engine, jid) > 0
        b = spawn(env("B"))  # max 1 concurrent search: B waits while A's lease is live
        assert owner(jid) == ("running", "A", 1)
        for _ in range(4):
            a.pause()
            try:
                # A's lease expires (3 s), B claims and resumes the search. Should A have been
                # stopped inside a transaction, its locks hold B off: let A go on and stop it again.
                deadline = time.monotonic() + 8
                while owner(jid)[1] != "B" and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                a.resume()  # A wakes up mid-generation, still believing it owns the search
            if owner(jid)[1] == "B":
                break
            assert owner(jid)[0] == "running", owner(jid)
            time.sleep(1.0)
        assert owner(jid)[1] == "B", owner(jid)
        with b.client() as c:
            done = wait_state(c, jid, timeout=180)
        assert done["state"] == "succeeded", (done["error"], a.log()[-2000:])
        assert owner(jid) == ("succeeded", "B", 2)
        n = SPEC["iterations"]
        with engine.connect() as conn:
            total, distinct = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT number) FROM search_trials WHERE search_id = :i"), {"i": jid}).one()
        assert (total, distinct) == (n, n)
        expected = ref.result(timeout=240)
        assert done["result"]["best"] == expected["best"]
        assert done["result"]["counts"] == expected["counts"]
        assert done["result"]["best_curve"] == [list(p) for p in expected["best_curve"]]
    finally:
        engine.dispose()


@pytest.mark.timeout(180)
def test_dispatcher_survives_a_database_outage(databases: Any, spawn: Any, tmp_path: Any) -> None:
    """PostgreSQL refuses connections for a few seconds: the dispatcher's claims fail meanwhile, and it
    goes on claiming afterwards instead of exiting (which left the HTTP side accepting searches that
    never ran)."""
    import psycopg
    from service_helpers import PG_ADMIN_URL, SMALL

    db_url = databases.new("postgres")
    name = db_url.rsplit("/", 1)[1]
    server = spawn(base_env(db_url, tmp_path / "artifacts", dev_mode="true"))
    deadline = time.monotonic() + 60
    while " started (max " not in server.log(tail=None):  # the dispatcher is up (migrated, polling)
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            deadline = time.monotonic() + 30
            while "claiming a job failed" not in server.log(tail=None):
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    with server.client() as c:
        r = c.post("/v1/searches", json=SMALL)
        assert r.status_code == 202, r.text
        assert wait_state(c, r.json()["id"], timeout=120)["state"] == "succeeded"
    assert "dispatcher exited" not in server.log(tail=None)
