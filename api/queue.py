"""The durable job queue: jobs in SQL, claimed with leases (owner, heartbeat, expiry).

A dispatcher claims the oldest queued job, or a running job whose lease expired (its owner died),
while fewer than ``max_concurrent`` jobs hold live leases across every replica. On PostgreSQL the
claim runs under a transaction-scoped advisory lock and ``SELECT ... FOR UPDATE SKIP LOCKED``; on
SQLite a single ``UPDATE ... RETURNING`` statement is atomic. A live owner's job is never taken:
its lease is renewed by heartbeats long before it expires.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from zennas_api.db import jobs, search_profiles

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


class QueueLimit(Exception):
    """A request the queue refuses, naming the field; ``status`` overrides the HTTP status the service
    derives from the field (429 for a tenant's limit, else 400)."""

    def __init__(self, message: str, field: str, status: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class Job:
    id: str
    tenant: str
    state: str
    spec: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    owner: str | None
    lease_expires: float | None
    attempts: int
    progress: dict[str, Any] | None
    progress_seq: int
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    idempotency_key: str | None

    @classmethod
    def from_row(cls, r: Any) -> Job:
        m = r._mapping
        return cls(
            id=m["id"], tenant=m["tenant"], state=m["state"], spec=json.loads(m["spec"]),
            created_at=m["created_at"], started_at=m["started_at"], finished_at=m["finished_at"],
            updated_at=m["updated_at"], owner=m["owner"], lease_expires=m["lease_expires"],
            attempts=m["attempts"] or 0, progress=json.loads(m["progress"]) if m["progress"] else None,
            progress_seq=m["progress_seq"] or 0, result=json.loads(m["result"]) if m["result"] else None,
            error=m["error"], cancel_requested=bool(m["cancel_requested"]), idempotency_key=m["idempotency_key"],
        )

    @property
    def etag(self) -> str:
        return etag(self.id, self.state, self.progress_seq, self.updated_at)


def etag(jid: str, state: str, progress_seq: int | None, updated_at: float) -> str:
    """A job's ETag, from its row (a ``Job`` or the raw columns: see ``JobQueue.get_row``)."""
    return f'"{jid}-{state}-{progress_seq or 0}-{int(updated_at * 1000)}"'


# built once: constructing the statement costs as much as running it (SQLAlchemy caches the compilation)
_GET_ROW = sa.select(jobs).where(jobs.c.id == sa.bindparam("id"), jobs.c.tenant == sa.bindparam("tenant"))


class JobQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # -- submission ----------------------------------------------------------------------------
    def create(self, tenant: str, spec: dict[str, Any], *, idempotency_key: str | None = None,
               max_queued: int | None = None, storage: tuple[int, int] | None = None,
               profile: tuple[str, str] | None = None) -> tuple[Job, bool]:
        """Store a new queued job; returns (job, created). A repeated Idempotency-Key returns the
        tenant's existing job, provided the spec is the same (else :class:`QueueLimit`, 422).
        ``storage``: (the search's estimated bytes, the tenant's quota), checked against what the
        tenant's searches hold now (429 naming ``storage``; 422 naming ``iterations`` when the search
        alone could never fit). ``profile``: (checksum, document) of the latency profile the search
        predicts with, pinned to the job in the same transaction (the job holds its bytes), so the
        search and any resume of it use that document whatever happens to the tenant's profiles."""
        if idempotency_key is not None:
            existing = self._by_key(tenant, idempotency_key)
            if existing is not None:
                return self._same_request(existing, spec, idempotency_key), False
        now = time.time()
        jid = uuid.uuid4().hex
        with self.engine.begin() as c:
            if max_queued is not None:
                n = c.execute(sa.select(sa.func.count()).select_from(jobs).where(
                    jobs.c.tenant == tenant, jobs.c.state.in_(("queued", "running")))).scalar_one()
                if n >= max_queued:
                    raise QueueLimit(f"tenant {tenant!r} already has {n} queued or running searches "
                                     f"(limit {max_queued}); wait for one to finish or cancel one", field="tenant")
            if storage is not None:
                need, quota = storage
                if need > quota:
                    raise QueueLimit(f"this search would store about {need:,} bytes (trial history and checkpoints), "
                                     f"more than the {quota:,} a tenant may hold; ask for fewer iterations",
                                     field="iterations", status=422)
                used = tenant_bytes(c, tenant)
                if used + need > quota:
                    raise QueueLimit(f"tenant {tenant!r} holds {used:,} bytes of search data and this search needs "
                                     f"about {need:,} more; the limit is {quota:,} (ZENNAS_MAX_STORAGE_PER_TENANT). "
                                     "Delete finished searches (DELETE /v1/searches/{id}) to free space",
                                     field="storage", status=429)
            try:
                c.execute(jobs.insert().values(
                    id=jid, tenant=tenant, state="queued", spec=json.dumps(spec), created_at=now, updated_at=now,
                    attempts=0, progress_seq=0, cancel_requested=False, idempotency_key=idempotency_key,
                    stored_bytes=len(profile[1]) if profile is not None else 0))
                if profile is not None:
                    c.execute(search_profiles.insert().values(search_id=jid, checksum=profile[0], document=profile[1]))
            except sa.exc.IntegrityError:
                pass
        if idempotency_key is not None:
            job = self._by_key(tenant, idempotency_key)
            assert job is not None
            if job.id != jid:  # another request with this key won the race
                return self._same_request(job, spec, idempotency_key), False
            return job, True
        job2 = self.get(jid)
        assert job2 is not None
        return job2, True

    @staticmethod
    def _same_request(job: Job, spec: dict[str, Any], key: str) -> Job:
        if json.loads(json.dumps(spec)) != job.spec:
            raise QueueLimit(f"Idempotency-Key {key!r} was already used for search {job.id} with a different "
                             "spec; use a new key for a new search", field="Idempotency-Key", status=422)
        return job

    def _by_key(self, tenant: str, key: str) -> Job | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(jobs).where(jobs.c.tenant == tenant, jobs.c.idempotency_key == key)).first()
        return Job.from_row(r) if r else None

    # -- reads ---------------------------------------------------------------------------------
    def get(self, jid: str, tenant: str | None = None) -> Job | None:
        q = sa.select(jobs).where(jobs.c.id == jid)
        if tenant is not None:
            q = q.where(jobs.c.tenant == tenant)
        with self.engine.connect() as c:
            r = c.execute(q).first()
        return Job.from_row(r) if r else None

    def get_row(self, jid: str, tenant: str) -> Any:
        """The job's raw row (JSON columns still text), or None: for reads that may need no parsing."""
        with self.engine.connect() as c:
            return c.execute(_GET_ROW, {"id": jid, "tenant": tenant}).first()

    def pinned_profile(self, jid: str) -> tuple[str, str] | None:
        """(checksum, document) of the latency profile pinned to the job at submission, or None."""
        t = search_profiles
        with self.engine.connect() as c:
            row = c.execute(sa.select(t.c.checksum, t.c.document).where(t.c.search_id == jid)).first()
        return None if row is None else (row[0], row[1])

    def list(self, tenant: str, *, state: str | None = None, cursor: str | None = None,
             limit: int = 50) -> tuple[list[Job], str | None]:
        """Newest first; the cursor is opaque (created_at and id of the last item)."""
        q = sa.select(jobs).where(jobs.c.tenant == tenant)
        if state is not None:
            q = q.where(jobs.c.state == state)
        if cursor:
            ts, jid = decode_cursor(cursor)
            q = q.where(sa.or_(jobs.c.created_at < ts, sa.and_(jobs.c.created_at == ts, jobs.c.id < jid)))
        q = q.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as c:
            rows = [Job.from_row(r) for r in c.execute(q)]
        nxt = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], nxt

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)).all()
        out = dict.fromkeys(STATES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def evaluated_total(self) -> int:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(jobs.c.progress).where(jobs.c.progress.is_not(None))).all()
        return sum(int(json.loads(r[0]).get("evaluated", 0)) for r in rows)

    # -- user actions --------------------------------------------------------------------------
    def cancel(self, jid: str, tenant: str) -> Job | None:
        now = time.time()
        with self.engine.begin() as c:
            c.execute(jobs.update().where(jobs.c.id == jid, jobs.c.tenant == tenant, jobs.c.state == "queued")
                      .values(state="cancelled", finished_at=now, updated_at=now))
            c.execute(jobs.update().where(jobs.c.id == jid, jobs.c.tenant == tenant, jobs.c.state == "running")
                      .values(cancel_requested=True, updated_at=now))
        return self.get(jid, tenant)

    def delete(self, jid: str, tenant: str) -> bool:
        from zennas.search.store import search_checkpoints, search_structures, search_trials

        with self.engine.begin() as c:
            n = c.execute(jobs.delete().where(jobs.c.id == jid, jobs.c.tenant == tenant,
                                              jobs.c.state.in_(FINISHED))).rowcount
            if n:
                c.execute(search_trials.delete().where(search_trials.c.search_id == jid))
                c.execute(search_structures.delete().where(search_structures.c.search_id == jid))
                c.execute(search_checkpoints.delete().where(search_checkpoints.c.search_id == jid))
                c.execute(search_profiles.delete().where(search_profiles.c.search_id == jid))
        return bool(n)

    def expired(self, older_than: float) -> list[str]:
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(sa.select(jobs.c.id).where(
                jobs.c.state.in_(FINISHED), jobs.c.finished_at < older_than))]

    # -- the dispatcher's side ------------------------------------------------------------------
    def claim(self, owner: str, *, lease_seconds: float, max_concurrent: int,
              max_per_tenant: int | None = None) -> Job | None:
        """The oldest claimable job, leased to ``owner``: at most ``max_concurrent`` live jobs in all and
        ``max_per_tenant`` per tenant (a tenant at its cap waits; the others' jobs go ahead)."""
        now = time.time()
        claimable = sa.or_(jobs.c.state == "queued",
                           sa.and_(jobs.c.state == "running", jobs.c.lease_expires < now))
        if max_per_tenant is not None:
            mine = jobs.alias("mine")
            tenant_live = sa.select(sa.func.count()).select_from(mine).where(
                mine.c.tenant == jobs.c.tenant, mine.c.state == "running",
                mine.c.lease_expires >= now).scalar_subquery()
            claimable = sa.and_(claimable, tenant_live < max_per_tenant)
        live = sa.select(sa.func.count()).select_from(jobs).where(
            jobs.c.state == "running", jobs.c.lease_expires >= now).scalar_subquery()
        values = {"state": "running", "owner": owner, "lease_expires": now + lease_seconds, "updated_at": now,
                  "attempts": jobs.c.attempts + 1, "started_at": sa.func.coalesce(jobs.c.started_at, now)}
        with self.engine.begin() as c:
            if self.postgres:
                c.execute(sa.text("SELECT pg_advisory_xact_lock(727275)"))  # serializes the concurrency cap
                if c.execute(sa.select(live)).scalar_one() >= max_concurrent:
                    return None
                row = c.execute(sa.select(jobs.c.id).where(claimable).order_by(jobs.c.created_at)
                                .limit(1).with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
                c.execute(jobs.update().where(jobs.c.id == row[0]).values(**values))
                jid = row[0]
            else:
                pick = sa.select(jobs.c.id).where(claimable).order_by(jobs.c.created_at).limit(1).scalar_subquery()
                row = c.execute(jobs.update().where(jobs.c.id == pick, live < max_concurrent)
                                .values(**values).returning(jobs.c.id)).first()
                if row is None:
                    return None
                jid = row[0]
        return self.get(jid)

    def heartbeat(self, owner: str, ids: list[str], lease_seconds: float) -> dict[str, bool]:
        """Renew leases; returns, per job still ours, whether a cancel was requested."""
        if not ids:
            return {}
        now = time.time()
        with self.engine.begin() as c:
            c.execute(jobs.update().where(jobs.c.id.in_(ids), jobs.c.owner == owner, jobs.c.state == "running")
                      .values(lease_expires=now + lease_seconds))
            rows = c.execute(sa.select(jobs.c.id, jobs.c.cancel_requested).where(
                jobs.c.id.in_(ids), jobs.c.owner == owner, jobs.c.state == "running")).all()
        return {r[0]: bool(r[1]) for r in rows}

    def set_progress(self, jid: str, owner: str, event: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(jobs.update().where(jobs.c.id == jid, jobs.c.owner == owner, jobs.c.state == "running")
                      .values(progress=json.dumps(event), progress_seq=jobs.c.progress_seq + 1,
                              updated_at=time.time()))

    def finish(self, jid: str, owner: str, state: str, *, result: dict[str, Any] | None = None,
               error: str | None = None) -> bool:
        now = time.time()
        with self.engine.begin() as c:
            n = c.execute(jobs.update().where(jobs.c.id == jid, jobs.c.owner == owner, jobs.c.state == "running")
                          .values(state=state, finished_at=now, updated_at=now, lease_expires=None,
                                  result=json.dumps(result) if result is not None else None, error=error,
                                  progress_seq=jobs.c.progress_seq + 1)).rowcount
        return bool(n)

    def release(self, jid: str, owner: str) -> None:
        """Give a running job back to the queue (drain); it resumes from its checkpoint."""
        with self.engine.begin() as c:
            c.execute(jobs.update().where(jobs.c.id == jid, jobs.c.owner == owner, jobs.c.state == "running")
                      .values(state="queued", owner=None, lease_expires=None, updated_at=time.time()))


def tenant_bytes(connection: Any, tenant: str) -> int:
    """What a tenant's searches hold in the database (``jobs.stored_bytes``, charged as they write)."""
    q = sa.select(sa.func.coalesce(sa.func.sum(jobs.c.stored_bytes), 0)).where(jobs.c.tenant == tenant)
    return int(connection.execute(q).scalar_one())


def encode_cursor(ts: float, jid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([ts, jid]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        ts, jid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(ts), str(jid)
    except (ValueError, TypeError) as e:
        raise QueueLimit("cursor is not one this service issued", field="cursor") from e
