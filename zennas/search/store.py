"""Durable search state: checkpoints and trial history in SQL (SQLite file by default).

One schema, shared with the service: its Alembic migrations create these tables from
:data:`metadata`. A generation is written in one transaction (its trials plus the checkpoint), never
one commit per trial.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

search_checkpoints = sa.Table(
    "search_checkpoints",
    metadata,
    sa.Column("search_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),  # generations completed
    sa.Column("n_trials", sa.Integer, nullable=False),  # trials completed (the next trial's number)
    sa.Column("spec", sa.Text, nullable=False),  # the search spec, JSON
    sa.Column("state", sa.Text, nullable=False),  # population, counters, best: JSON
    sa.Column("finished", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

search_trials = sa.Table(
    "search_trials",
    metadata,
    sa.Column("search_id", sa.String(64), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # complete | rejected | failed
    sa.Column("reason", sa.String(200)),  # which budget rejected it, or the error of a failed one
    sa.Column("score", sa.Float),
    sa.Column("flops", sa.Float),
    sa.Column("params", sa.Float),
    sa.Column("layers", sa.Integer),
    sa.Column("latency_ms", sa.Float),
    sa.Column("structure", sa.Text, nullable=False),  # compact JSON list of blocks
    sa.Column("worker", sa.String(120)),  # node/actor that evaluated it ("driver" for in-driver scores)
    sa.Column("attempts", sa.Integer),
    sa.Column("seconds", sa.Float),
)


class TrialRow(NamedTuple):
    """One trial as the search writes it (the columns of search_trials after search_id)."""

    number: int
    state: str  # complete | rejected | failed
    reason: str | None
    score: float | None
    flops: float
    params: float
    layers: int
    latency_ms: float | None
    structure: str  # compact JSON: one [type, in, out, stride, kernel, layers, bottleneck] list per block
    worker: str | None
    attempts: int | None
    seconds: float | None


@dataclass
class Checkpoint:
    search_id: str
    generation: int
    n_trials: int
    spec: dict[str, Any]
    state: dict[str, Any]
    finished: bool


def sqlite_pragmas(engine: Engine) -> None:
    """WAL journal and a busy timeout on every SQLite connection: readers never block the writer."""
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def engine_for(url_or_path: str | Path) -> Engine:
    url = str(url_or_path)
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{url}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    kw: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kw["connect_args"] = {"timeout": 30}
    eng = sa.create_engine(url, **kw)
    if url.startswith("sqlite"):
        sqlite_pragmas(eng)
    return eng


class SearchStore:
    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        self.engine = engine
        if create:
            metadata.create_all(engine)

    @classmethod
    def open(cls, url_or_path: str | Path) -> SearchStore:
        return cls(engine_for(url_or_path))

    def load(self, search_id: str) -> Checkpoint | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(search_checkpoints).where(search_checkpoints.c.search_id == search_id)).first()
        if row is None:
            return None
        return Checkpoint(row.search_id, row.generation, row.n_trials, json.loads(row.spec), json.loads(row.state),
                          bool(row.finished))

    def save_generation(self, cp: Checkpoint, trials: Sequence[TrialRow]) -> None:
        """The generation's trials and the checkpoint after it, atomically."""
        values = {"generation": cp.generation, "n_trials": cp.n_trials, "spec": json.dumps(cp.spec),
                  "state": json.dumps(cp.state), "finished": cp.finished, "updated_at": time.time()}
        with self.engine.begin() as c:
            self._guard(c, cp)
            if trials:
                self._insert_trials(c, cp.search_id, trials)
            updated = c.execute(search_checkpoints.update()
                                .where(search_checkpoints.c.search_id == cp.search_id).values(**values))
            if updated.rowcount == 0:
                c.execute(search_checkpoints.insert().values(search_id=cp.search_id, **values))

    def _insert_trials(self, connection: Any, search_id: str, trials: Sequence[TrialRow]) -> None:
        """One DBAPI executemany of plain tuples: SQLAlchemy's per-row parameter processing costs
        more than the search spends making the trial."""
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        sql = (f"INSERT INTO {search_trials.name} (search_id, {', '.join(TrialRow._fields)}) "
               f"VALUES ({', '.join([mark] * (len(TrialRow._fields) + 1))})")
        connection.exec_driver_sql(sql, [(search_id, *t) for t in trials])

    def _guard(self, connection: Any, cp: Checkpoint) -> None:
        """Runs first inside the write's transaction; a subclass raises to refuse the write."""

    def discard_after(self, search_id: str, n_trials: int) -> None:
        """Drop trial rows past a checkpoint (left by a generation that died before committing)."""
        with self.engine.begin() as c:
            c.execute(search_trials.delete().where(search_trials.c.search_id == search_id,
                                                   search_trials.c.number >= n_trials))

    def trials(self, search_id: str, *, offset: int = 0, limit: int | None = None,
               states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        q = sa.select(search_trials).where(search_trials.c.search_id == search_id)
        if states is not None:
            q = q.where(search_trials.c.state.in_(list(states)))
        q = q.order_by(search_trials.c.number).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def delete(self, search_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(search_trials.delete().where(search_trials.c.search_id == search_id))
            c.execute(search_checkpoints.delete().where(search_checkpoints.c.search_id == search_id))
