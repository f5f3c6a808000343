"""Two replicas on one PostgreSQL database: one is SIGKILLed, the other drained with SIGTERM, a third
finishes the work. Every job finishes exactly once: succeeded, one result, one trial row per
iteration and no duplicates."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from service_helpers import base_env, make_engine, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

N_JOBS = 6
ITERATIONS = 50_000  # ~5 s each: long enough that both replicas are caught mid-search
SPEC = {"population": 32, "iterations": ITERATIONS, "generation": 16, "checkpoint_every": 1024}


def running(engine: sa.Engine) -> list[tuple[str, str, int]]:
    """(id, replica name, checkpointed trials) of the searches running under a live lease."""
    with engine.connect() as c:
        rows = c.execute(sa.text(
            "SELECT j.id, j.owner, coalesce(k.n_trials, 0) FROM jobs j "
            "LEFT JOIN search_checkpoints k ON k.search_id = j.id "
            "WHERE j.state = 'running' AND j.lease_expires > :now"), {"now": time.time()}).all()
    return [(r[0], r[1].split(":", 1)[0], int(r[2])) for r in rows]


@pytest.mark.timeout(300)
def test_kill_one_drain_one_third_finishes_everything(databases: Any, spawn: Any, tmp_path: Any) -> None:
    db_url = databases.new("postgres")
    engine = make_engine(db_url)
    common = {"dev_mode": "true", "max_concurrent_searches": 2, "lease_seconds": 3, "heartbeat_seconds": 0.5}

    def env(name: str) -> dict[str, str]:
        return base_env(db_url, tmp_path / "artifacts", replica_name=name, **common)

    try:
        r1 = spawn(env("r1"))
        r2 = spawn(env("r2"))
        ids = []
        for i in range(N_JOBS):
            with (r1 if i % 2 else r2).client() as c:
                r = c.post("/v1/searches", json={**SPEC, "seed": i})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])

        # wait for a moment when replica 2 runs a checkpointed search (and, preferably, replica 1 one too)
        deadline = time.monotonic() + 90
        prefer_until = time.monotonic() + 20
        snapshot: list[tuple[str, str, int]] = []
        while time.monotonic() < deadline:
            snapshot = running(engine)
            owners = {o for _, o, n in snapshot if n > 0}
            if "r2" in owners and ("r1" in owners or time.monotonic() > prefer_until):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"replica 2 never ran a checkpointed search: {snapshot}")
        assert len(snapshot) <= 2  # ZENNAS_MAX_CONCURRENT_SEARCHES across both replicas

        r1.kill()  # SIGKILL the whole of replica 1: its lease just expires
        on_r1 = [j for j, o, _ in snapshot if o == "r1"]
        rc = r2.terminate(timeout=60)  # SIGTERM: drain, release, exit
        assert rc == 0, r2.log()
        with engine.connect() as c:
            rows = {r[0]: r for r in c.execute(sa.text("SELECT id, state, owner, attempts FROM jobs")).all()}
        drained = [j for j, o, _ in snapshot if o == "r2"]
        for j in drained:  # replica 2's running search went back to the queue (unless it finished first)
            if rows[j].state != "succeeded":
                assert (rows[j].state, rows[j].owner) == ("queued", None), rows[j]
        assert not any(r.state == "running" and r.owner.startswith("r2:") for r in rows.values())

        # a fresh replica finishes everything
        r3 = spawn(env("r3"))
        with r3.client() as c:
            jobs = {j: wait_state(c, j, timeout=200) for j in ids}
        for j, job in jobs.items():
            assert job["state"] == "succeeded", (job["state"], job["error"], job["attempts"],
                                                 *(s.log()[-3000:] for s in (r1, r2, r3)))
            assert job["result"]["counts"]["trials"] == ITERATIONS
            assert job["result"]["search_id"] == j
        for j in on_r1 + drained:
            if rows[j].state != "succeeded":
                assert jobs[j]["attempts"] >= 2, jobs[j]
        with engine.connect() as c:
            trials = {r[0]: (r[1], r[2]) for r in c.execute(sa.text(
                "SELECT search_id, count(*), count(DISTINCT number) FROM search_trials GROUP BY search_id"))}
            checkpoints = dict(c.execute(sa.text(
                "SELECT search_id, n_trials FROM search_checkpoints WHERE finished")).all())
            states = c.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY state")).all()
        assert trials == {j: (ITERATIONS, ITERATIONS) for j in ids}
        assert checkpoints == dict.fromkeys(ids, ITERATIONS)
        assert dict(states) == {"succeeded": N_JOBS}
    finally:
        engine.dispose()
