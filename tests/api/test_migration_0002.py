"""Migration 0002 upgrades a database holding 0001 data, on SQLite and PostgreSQL: existing jobs get
``stored_bytes`` 0, the new tables exist and are used, and a downgrade returns to 0001's schema."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from service_helpers import DBS, make_engine, sa_url

pytestmark = pytest.mark.timeout(120)


def alembic(url: str, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parents[2] / "api" / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sa_url(url).replace("%", "%%"))
    getattr(command, action)(cfg, revision)


@pytest.mark.parametrize("kind", DBS)
def test_0002_upgrades_existing_data_and_downgrades(kind: str, databases: Any) -> None:
    url = databases.new(kind)
    alembic(url, "upgrade", "0001")
    eng = make_engine(url)
    try:
        now = time.time()
        with eng.begin() as c:
            c.execute(sa.text("INSERT INTO jobs (id, tenant, state, spec, created_at, updated_at, attempts, "
                              "progress_seq, cancel_requested) VALUES ('j1', 't', 'succeeded', '{}', :n, :n, 1, 0, "
                              ":f)"), {"n": now, "f": False})
            c.execute(sa.text("INSERT INTO search_trials (search_id, number, state, structure) "
                              "VALUES ('j1', 0, 'complete', '[[\"ConvKXBNRELU\",3,32,2,3,1,null]]')"))
        alembic(url, "upgrade", "head")
        with eng.begin() as c:
            assert c.execute(sa.text("SELECT stored_bytes FROM jobs WHERE id = 'j1'")).scalar_one() == 0
            c.execute(sa.text("INSERT INTO search_structures (search_id, base, number, blocks) VALUES ('j1', 0, 0, :b)"),
                      {"b": b"\x78\x9c"})
            c.execute(sa.text("INSERT INTO sessions (id, tenant, created_at, expires_at) VALUES ('s', 't', :n, :n)"),
                      {"n": now})
        from zennas.search.store import SearchStore

        store = SearchStore(eng, create=False)  # a row written before 0002 still reads (stored whole)
        assert store.trials("j1")[0]["structure"] == [["ConvKXBNRELU", 3, 32, 2, 3, 1, None]]
        alembic(url, "downgrade", "0001")
        insp = sa.inspect(eng)
        assert "sessions" not in insp.get_table_names() and "search_structures" not in insp.get_table_names()
        assert "stored_bytes" not in {col["name"] for col in insp.get_columns("jobs")}
    finally:
        eng.dispose()
