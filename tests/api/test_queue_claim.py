"""The queue's claim: global and per-tenant caps on live jobs, on real SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from service_helpers import DBS
from zennas_api.db import make_engine, migrate
from zennas_api.queue import JobQueue, QueueLimit


@pytest.fixture(params=DBS)
def queue(request: pytest.FixtureRequest, databases: Any) -> JobQueue:
    url = databases.new(request.param)
    migrate(url)
    return JobQueue(make_engine(url))


@pytest.mark.timeout(120)
def test_per_tenant_cap_lets_other_tenants_go_ahead(queue: JobQueue) -> None:
    a = [queue.create("a", {"seed": i})[0] for i in range(3)]
    time.sleep(0.01)
    b = queue.create("b", {"seed": 9})[0]
    claim = dict(lease_seconds=30, max_concurrent=10, max_per_tenant=1)
    first = queue.claim("o", **claim)
    assert first is not None and first.id == a[0].id
    second = queue.claim("o", **claim)  # a is at its cap: b's newer job goes first
    assert second is not None and second.id == b.id
    assert queue.claim("o", **claim) is None  # both tenants at their cap, a's jobs wait
    assert queue.finish(a[0].id, "o", "succeeded", result={})
    third = queue.claim("o", **claim)
    assert third is not None and third.id == a[1].id
    # an expired lease does not count as live: the job itself is claimable again
    with queue.engine.begin() as c:
        c.execute(sa.text("UPDATE jobs SET lease_expires = 0 WHERE id = :i"), {"i": third.id})
    again = queue.claim("o2", **claim)
    assert again is not None and again.id == third.id and again.attempts == 2
    # without a per-tenant cap only the global one holds
    assert queue.claim("o", lease_seconds=30, max_concurrent=10) is not None
    assert queue.claim("o", lease_seconds=30, max_concurrent=10) is None  # nothing left queued


@pytest.mark.timeout(120)
def test_idempotency_key_with_another_spec_is_refused(queue: JobQueue) -> None:
    job, created = queue.create("a", {"seed": 1, "budgets": {"flops": 1e9}}, idempotency_key="k")
    assert created
    same, created = queue.create("a", {"seed": 1, "budgets": {"flops": 1e9}}, idempotency_key="k")
    assert not created and same.id == job.id
    with pytest.raises(QueueLimit, match="already used for search") as ei:
        queue.create("a", {"seed": 2, "budgets": {"flops": 1e9}}, idempotency_key="k")
    assert ei.value.field == "Idempotency-Key" and ei.value.status == 422
    with queue.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 1
