"""The service's tables, on the same metadata as the search checkpoints (one schema, one migration
history), and the engine. Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zennas.search.store import metadata, sqlite_pragmas

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # queued|running|succeeded|failed|cancelled
    sa.Column("spec", sa.Text, nullable=False),  # validated SearchSpec, JSON
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("owner", sa.String(120)),  # replica holding the lease
    sa.Column("lease_expires", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # claims so far (resumes count)
    sa.Column("progress", sa.Text),  # the latest progress event, JSON (schema zennas.progress/1)
    sa.Column("progress_seq", sa.Integer, nullable=False, default=0),
    sa.Column("result", sa.Text),  # the search summary, JSON
    sa.Column("error", sa.Text),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("idempotency_key", sa.String(200)),
    # what the search wrote to the database (trial rows, bases, checkpoint), for the tenant's quota
    sa.Column("stored_bytes", sa.BigInteger, nullable=False, default=0, server_default="0"),
    sa.UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency"),
)

search_profiles = sa.Table(  # the latency profile a search was submitted with, pinned to it (see queue.create)
    "search_profiles",
    metadata,
    sa.Column("search_id", sa.String(32), primary_key=True),  # jobs.id
    sa.Column("checksum", sa.String(80), nullable=False),  # = the job spec's latency.profile_checksum
    sa.Column("document", sa.Text, nullable=False),  # the profile document, JSON, as it was at submission
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # public prefix of the key
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("hash", sa.String(128), nullable=False),  # sha256 of the secret part
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

sessions = sa.Table(  # browser sessions, server-side: signing out revokes the row, and the cookie with it
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # random; the signed cookie carries it
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(16)),  # the API key exchanged for it (None in development mode)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("revoked_at", sa.Float),
)


def make_engine(url: str) -> Engine:
    kw: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kw["pool_pre_ping"] = True
        # the status poll reads on the event loop: an unreachable server must fail a request, not
        # stall the HTTP process (reads of committed rows never wait on locks under MVCC)
        kw["connect_args"] = {"connect_timeout": 10}
        kw["pool_timeout"] = 10
        kw["pool_size"] = 10
        kw["max_overflow"] = 20
    eng = sa.create_engine(url, **kw)
    if url.startswith("sqlite"):
        sqlite_pragmas(eng)
    return eng


def migrate(url: str) -> None:
    """Bring the database to the latest schema with Alembic (safe to call from several replicas)."""
    from alembic import command
    from alembic.config import Config

    here = Path(__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
