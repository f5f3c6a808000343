"""What the service stores per tenant: the quota on a tenant's database bytes (trial rows, structure
bases, checkpoints), estimated before a search is accepted and charged as its generations are
written (``jobs.stored_bytes``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from zennas_api.db import jobs
from zennas_api.queue import tenant_bytes

from zennas.errors import ZenNASError
from zennas.search import SearchSpec
from zennas.search.rows import estimate_bytes


class StorageQuotaExceeded(ZenNASError):
    """A tenant's searches hold more than ``ZENNAS_MAX_STORAGE_PER_TENANT`` bytes."""


def estimate(spec: SearchSpec) -> int:
    """Roughly the bytes a search will write (see :func:`zennas.search.rows.estimate_bytes`)."""
    n_blocks = len(spec.start_structure(spec.resolve_space()).blocks)
    return estimate_bytes(n_blocks, spec.iterations, spec.population)


def charge(connection: Any, job_id: str, owner: str, nbytes: int, quota: int | None) -> bool:
    """Inside a generation's transaction: add ``nbytes`` to the job's stored bytes, provided
    ``owner`` still holds its lease (False otherwise: the write must not happen). Raises
    :class:`StorageQuotaExceeded` when the tenant is then over ``quota``."""
    held = connection.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.owner == owner,
                                                  jobs.c.state == "running")
                              .values(owner=owner, stored_bytes=jobs.c.stored_bytes + nbytes)).rowcount
    if not held:
        return False
    if quota is not None and nbytes:
        tenant = connection.execute(sa.select(jobs.c.tenant).where(jobs.c.id == job_id)).scalar_one()
        used = tenant_bytes(connection, tenant)
        if used > quota:
            raise StorageQuotaExceeded(
                f"tenant {tenant!r} holds {used:,} bytes of search data, over this service's limit of "
                f"{quota:,} (ZENNAS_MAX_STORAGE_PER_TENANT); delete finished searches and submit a smaller one",
                field="storage")
    return True


def check_room(engine: Any, tenant: str, need: int, quota: int | None, what: str) -> None:
    """Refuse (429 naming ``storage``) before building an artifact of about ``need`` bytes that would take
    the tenant over ``quota``."""
    from zennas_api.queue import QueueLimit

    if quota is None:
        return
    with engine.connect() as c:
        used = tenant_bytes(c, tenant)
    if used + need > quota:
        raise QueueLimit(f"{what} would store about {need:,} bytes; tenant {tenant!r} holds {used:,} of this "
                         f"service's limit of {quota:,} (ZENNAS_MAX_STORAGE_PER_TENANT); delete finished searches "
                         "first", field="storage", status=429)


def charge_artifact(engine: Any, job_id: str, nbytes: int) -> None:
    """Count a built artifact's bytes (a bundle option's files) in its job's stored bytes."""
    with engine.begin() as c:
        c.execute(jobs.update().where(jobs.c.id == job_id).values(stored_bytes=jobs.c.stored_bytes + nbytes))


def release_artifact(engine: Any, job_id: str, nbytes: int) -> None:
    """Give back what :func:`charge_artifact` counted, once the artifact is deleted (never below 0)."""
    with engine.begin() as c:
        c.execute(jobs.update().where(jobs.c.id == job_id).values(
            stored_bytes=sa.case((jobs.c.stored_bytes > nbytes, jobs.c.stored_bytes - nbytes), else_=0)))
