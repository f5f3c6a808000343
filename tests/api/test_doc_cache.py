"""The status poll's cache of rendered job documents (``routes.searches.DocCache``): valid for one
version of the row and one base URL, bounded in entries and bytes. In-process, on real rows of a real
SQLite database: no server needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zennas_api.db import make_engine, migrate
from zennas_api.queue import JobQueue
from zennas_api.routes.searches import DocCache

BASE = "http://127.0.0.1:8000/"


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    migrate(url)
    return JobQueue(make_engine(url))


def row(q: JobQueue, jid: str) -> Any:
    r = q.get_row(jid, "t")
    assert r is not None
    return r


@pytest.mark.timeout(60)
def test_one_entry_per_row_version_and_base_url(queue: JobQueue) -> None:
    job, _ = queue.create("t", {"seed": 1})
    cache = DocCache()
    r0 = row(queue, job.id)
    assert cache.get(job.id, BASE, r0) is None
    cache.put(job.id, BASE, r0, b"v0")
    assert cache.get(job.id, BASE, row(queue, job.id)) == b"v0"  # the same version, read again
    assert cache.get(job.id, "http://localhost:8000/", r0) is None  # another host: other links
    assert queue.get_row(job.id, "other") is None  # another tenant's job is not found

    owner = "o"
    assert queue.claim(owner, lease_seconds=30, max_concurrent=1) is not None
    assert cache.get(job.id, BASE, row(queue, job.id)) is None  # running now
    cache.put(job.id, BASE, row(queue, job.id), b"v1")
    queue.set_progress(job.id, owner, {"iteration": 1})
    assert cache.get(job.id, BASE, row(queue, job.id)) is None
    # a change that leaves the ETag's columns alone (same state, progress_seq and millisecond) is a
    # new version all the same
    r1 = row(queue, job.id)
    cache.put(job.id, BASE, r1, b"v2")
    with queue.engine.begin() as c:
        c.exec_driver_sql("UPDATE jobs SET error = 'x' WHERE id = ?", (job.id,))
    r2 = row(queue, job.id)
    assert r2.updated_at == r1.updated_at and r2.progress_seq == r1.progress_seq
    assert cache.get(job.id, BASE, r2) is None
    assert len(cache.entries) == 1


@pytest.mark.timeout(60)
def test_bounded_in_entries_and_bytes(queue: JobQueue) -> None:
    rows = []
    for i in range(10):
        job, _ = queue.create("t", {"seed": i})
        rows.append(row(queue, job.id))
    cache = DocCache(max_entries=4)
    for r in rows:
        cache.put(r.id, BASE, r, b"b" * 100)
    assert list(cache.entries) == [r.id for r in rows[6:]]  # the least recently used went first
    assert cache.get(rows[6].id, BASE, rows[6]) is not None  # now the most recently used
    cache.put(rows[0].id, BASE, rows[0], b"b" * 100)
    assert list(cache.entries) == [rows[8].id, rows[9].id, rows[6].id, rows[0].id]

    size = len(b"b" * 100) + len(rows[0].spec) + len(rows[0].state)  # the body and the row's text
    budget = 8 * size + size // 2
    cache = DocCache(max_entries=100, max_bytes=budget)
    for r in rows:
        cache.put(r.id, BASE, r, b"b" * 100)
        assert cache.bytes == sum(e[3] for e in cache.entries.values()) <= budget
    assert list(cache.entries) == [r.id for r in rows[2:]]
    cache.put(rows[4].id, BASE, rows[4], b"b" * (budget // 8))  # over an eighth of the budget: not kept
    assert rows[4].id not in cache.entries and cache.get(rows[4].id, BASE, rows[4]) is None
    assert cache.bytes == sum(e[3] for e in cache.entries.values())
