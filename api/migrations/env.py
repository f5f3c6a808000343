"""Alembic environment: the zennas schema (search checkpoints, trials, jobs, API keys)."""

from __future__ import annotations

import sqlalchemy as sa
import zennas_api.db  # noqa: F401  (defines the service tables on the shared metadata)
from alembic import context

from zennas.search.store import metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":  # replicas starting together migrate one at a time
            connection.execute(sa.text("SELECT pg_advisory_lock(727274)"))
        try:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()  # the lock's statement began the transaction: commit before unlocking
        except BaseException:
            connection.rollback()
            raise
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_unlock(727274)"))
                connection.commit()
    engine.dispose()


run_migrations_online()
