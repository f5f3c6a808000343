"""Fixtures for the service tests: real ``zennas serve`` processes on SQLite and on PostgreSQL.

Every server runs in its own process group (uvicorn + the dispatcher it starts), so a test can
SIGKILL the whole replica at once; teardown always kills whatever is left. PostgreSQL is required:
each test session creates fresh databases (``zennas_test_<random>``) on the server named by
``ZENNAS_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and drops them at the
end. An unreachable PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from service_helpers import DBS, PG_ADMIN_URL, Server, base_env, cli, make_engine


# -- databases -------------------------------------------------------------------------------------
class Databases:
    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.pg_names: list[str] = []

    def _admin(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as e:
            pytest.fail(f"PostgreSQL is required for the service tests and is unreachable at {PG_ADMIN_URL}: {e}",
                        pytrace=False)

    def new(self, kind: str) -> str:
        """A fresh, empty database; its URL."""
        if kind == "sqlite":
            return f"sqlite:///{self.tmp.mktemp('sqlite') / 'zennas.db'}"
        assert kind == "postgres", kind
        name = f"zennas_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as c:
            c.execute(f'CREATE DATABASE "{name}"')
        self.pg_names.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        if not self.pg_names:
            return
        with self._admin() as c:
            for name in self.pg_names:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.pg_names.clear()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory)
    yield dbs
    dbs.drop_all()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers for one test; every one still running is killed (its whole group) afterwards."""
    servers: list[Server] = []

    def _spawn(env: dict[str, str], **kw: Any) -> Server:
        s = Server(env, tmp_path / f"server-{len(servers)}.log", **kw)
        servers.append(s)
        return s.start()

    yield _spawn
    for s in servers:
        s.kill()


# -- the shared service (one server per database for the functional tests) ------------------------
@dataclass
class Service:
    kind: str
    db_url: str
    env: dict[str, str]
    server: Server
    artifacts: Path
    keys: dict[str, str] = field(default_factory=dict)
    engine: sa.Engine | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, tenant: str = "a", **kw: Any) -> httpx.Client:
        return self.server.client(self.keys[tenant], **kw)

    def new_key(self, tenant: str) -> str:
        """A key for a fresh tenant (created in-process; the CLI path is tested separately)."""
        from zennas_api.auth import create_key

        assert self.engine is not None
        key = create_key(self.engine, tenant)
        self.keys[tenant] = key
        return key

    def db(self) -> sa.Engine:
        assert self.engine is not None
        return self.engine


@pytest.fixture(scope="session", params=DBS)
def service(request: pytest.FixtureRequest, databases: Databases,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    kind = request.param
    db_url = databases.new(kind)
    tmp = tmp_path_factory.mktemp(f"service-{kind}")
    env = base_env(db_url, tmp / "artifacts", max_concurrent_searches=2, max_queued_per_tenant=1000,
                   lease_seconds=10, heartbeat_seconds=0.5, max_body_bytes=100_000,
                   metrics_token="metrics-" + "1" * 24)  # the job figures of /metrics need it
    keys = {t: cli(env, "keys", "create", "--tenant", t).stdout.strip() for t in ("a", "b")}
    server = Server(env, tmp / "server.log")
    server.start()
    svc = Service(kind, db_url, env, server, tmp / "artifacts", keys, make_engine(db_url))
    try:
        yield svc
    finally:
        server.kill()
        assert svc.engine is not None
        svc.engine.dispose()




# -- a device latency profile ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def profile_doc() -> dict[str, Any]:
    """A real profile, built here (torch eager, the S2D space at 64x64, a coarse grid: ~8 s). The CPU
    clock, as the README advises for a shared, loaded build machine: with the wall clock and 2 runs a
    cell, ``zennas profile check`` of such a profile on a loaded 2-core machine gave a MAPE of 62 %
    and Kendall tau 0.14 (7 structures); with these settings 11 % and 1.0, so a search's measured
    winner meets a budget of twice the start's prediction (tests/api/test_profile_search.py)."""
    pytest.importorskip("scipy")
    from zennas.latency import BuildSpec, build_profile

    p = build_profile(BuildSpec(runtime="torch", space="giraffe-s2d", height=64, width=64, grid_ratio=4.0,
                                plan_samples=20, calibration=6, warmup=1, min_runs=5, max_runs=5, min_time_s=0.0,
                                network_runs=5, clock="cpu"))
    return p.to_dict()
