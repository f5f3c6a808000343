"""A search over a large structure (2,000 blocks) stores bounded trial rows, on SQLite and PostgreSQL:
every stored structure decodes to the one the search evaluated (its stored FLOPs, params and layers,
computed from the real structure at evaluation time, are recomputed from the decoded one), each row's
structure stays under ~1 KB instead of the ~100 KB whole structure, and a resumed search writes the
very rows an uninterrupted one writes."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from large_space import large_space_doc

from zennas.cost import costs
from zennas.search import Search, SearchSpec, SearchStore
from zennas.search import rows as rowcodec
from zennas.search.store import engine_for, search_structures, search_trials

pytestmark = pytest.mark.timeout(300)
PG_ADMIN_URL = os.environ.get("ZENNAS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
N_BLOCKS = 2000


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (PostgreSQL: created for this test and dropped after it)."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
        return
    import psycopg

    name = f"zennas_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required and is unreachable at {PG_ADMIN_URL}: {e}", pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def spec(iterations: int = 192) -> SearchSpec:
    return SearchSpec(space="large", space_doc=large_space_doc(N_BLOCKS), score="entropy-analytic",
                      height=64, width=64, population=16, iterations=iterations, generation=16,
                      checkpoint_every=32, seed=7, warmup_iterations=0)


def raw_rows(store: SearchStore, sid: str) -> list[tuple[int, str]]:
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.select(search_trials.c.number, search_trials.c.structure)
                                            .where(search_trials.c.search_id == sid)
                                            .order_by(search_trials.c.number))]  # type: ignore[misc]


def test_large_structure_search_stores_bounded_rows(db_url: str) -> None:
    store = SearchStore(engine_for(db_url))
    try:
        result = Search(spec(), store=store, search_id="big").run()
        history = store.trials("big")
        assert [r["number"] for r in history] == list(range(192))
        assert result.evaluated > 100
        for r in history:  # the decoded structure is the evaluated one: its costs were stored with it
            c = costs(rowcodec.decode(r["structure"]), 64, 64)
            assert (c.flops, c.params, c.layers) == (r["flops"], r["params"], r["layers"]), r["number"]
        raw = raw_rows(store, "big")
        whole = len(json.dumps(rowcodec.encode(result.best_structure)))
        assert whole > 80_000
        assert max(len(t) for _, t in raw) <= 40 + rowcodec.MAX_DIFF * 60
        with store.engine.connect() as c:
            n_bases, base_bytes = c.execute(sa.select(sa.func.count(), sa.func.sum(sa.func.length(
                search_structures.c.blocks))).where(search_structures.c.search_id == "big")).one()
        assert 1 <= n_bases <= 192 // 8
        # trial history + bases: under a tenth of storing every structure whole
        assert sum(len(t) for _, t in raw) + base_bytes < 192 * whole / 10
        # the checkpoint (16 members of ~100 KB each, sharing most blocks) is stored compressed
        from zennas.search.store import search_checkpoints

        with store.engine.connect() as c:
            state = c.execute(sa.select(search_checkpoints.c.state)
                              .where(search_checkpoints.c.search_id == "big")).scalar_one()
        assert len(state) < 16 * whole / 20, len(state)
        assert len(store.load("big").state["population"]["members"]) == 16  # type: ignore[union-attr]
        # the best structure is among the decoded trials
        assert any(rowcodec.decode(r["structure"]) == result.best_structure for r in history)
        store.delete("big")
        with store.engine.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(search_structures)).scalar_one() == 0
    finally:
        store.engine.dispose()


def test_resumed_large_search_writes_the_same_rows(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # small deltas and a short window of bases, so this search makes many bases and the resumed run
    # must reload exactly the window the uninterrupted one had
    monkeypatch.setattr(rowcodec, "MAX_DIFF", 2)
    monkeypatch.setattr(rowcodec, "RECENT_BASES", 3)
    store = SearchStore(engine_for(db_url))
    try:
        Search(spec(160), store=store, search_id="full").run()
        calls = [0]

        def stop_midway() -> bool:
            calls[0] += 1
            return calls[0] >= 5

        first = Search(spec(160), store=store, search_id="part", should_stop=stop_midway)
        first.run()
        assert first.stopped
        fresh = SearchStore(engine_for(db_url))  # a new process: nothing of the first run in memory
        try:
            resumed = Search(spec(160), store=fresh, search_id="part").run(resume=True)
        finally:
            fresh.engine.dispose()
        assert resumed.n_trials == 160
        assert raw_rows(store, "part") == raw_rows(store, "full")
        with store.engine.connect() as c:
            n_bases = c.execute(sa.select(sa.func.count()).where(search_structures.c.search_id == "full")).scalar_one()
        assert n_bases > 3 * rowcodec.RECENT_BASES, n_bases
        for r in store.trials("part"):
            c = costs(rowcodec.decode(r["structure"]), 64, 64)
            assert (c.flops, c.params, c.layers) == (r["flops"], r["params"], r["layers"]), r["number"]
    finally:
        store.engine.dispose()
