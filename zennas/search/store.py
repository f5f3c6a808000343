"""Durable search state: checkpoints and trial history in SQL (SQLite file by default).

One schema, shared with the service: its Alembic migrations create these tables from
:data:`metadata`. A generation is written in one transaction (its trials plus the checkpoint), never
one commit per trial. Trial structures are stored compactly (:mod:`zennas.search.rows`: whole when
small, else a delta from a base structure kept in ``search_structures``); :meth:`SearchStore.trials`
returns them decoded, as block rows.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zennas.search import rows as rowcodec
from zennas.search.rows import (
    ROW_OVERHEAD_BYTES,
    TrialEncoder,
    decode,
    decode_trial,
    pack_json,
    referenced_bases,
    unpack_base,
    unpack_json,
)
from zennas.space.structure import Structure

metadata = sa.MetaData()

search_checkpoints = sa.Table(
    "search_checkpoints",
    metadata,
    sa.Column("search_id", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),  # generations completed
    sa.Column("n_trials", sa.Integer, nullable=False),  # trials completed (the next trial's number)
    sa.Column("spec", sa.Text, nullable=False),  # the search spec, JSON (rows.pack_json: compressed when large)
    sa.Column("state", sa.Text, nullable=False),  # population, counters, best: JSON (likewise)
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
    sa.Column("structure", sa.Text, nullable=False),  # compact JSON (zennas.search.rows): block rows or a delta
    sa.Column("worker", sa.String(120)),  # node/actor that evaluated it ("driver" for in-driver scores)
    sa.Column("attempts", sa.Integer),
    sa.Column("seconds", sa.Float),
)

search_structures = sa.Table(  # the bases trial deltas refer to (zennas.search.rows)
    "search_structures",
    metadata,
    sa.Column("search_id", sa.String(64), primary_key=True),
    sa.Column("base", sa.Integer, primary_key=True),  # per-search id, from 0
    sa.Column("number", sa.Integer, nullable=False),  # the trial that introduced it (dropped with it)
    sa.Column("blocks", sa.LargeBinary, nullable=False),  # block rows, JSON, zlib-compressed
)


class TrialRow(NamedTuple):
    """One trial as the search writes it (the columns of search_trials after search_id).
    ``structure``: the :class:`Structure` (the store encodes it, zennas.search.rows) or text already
    in the stored form."""

    number: int
    state: str  # complete | rejected | failed
    reason: str | None
    score: float | None
    flops: float
    params: float
    layers: int
    latency_ms: float | None
    structure: Structure | str
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
    MAX_ENCODERS = 64  # searches whose recent bases are kept in memory (a dispatcher runs a few at once)

    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        self.engine = engine
        self._encoders: OrderedDict[str, TrialEncoder] = OrderedDict()  # one search's encoder: its thread only
        self._lock = threading.Lock()  # guards the dict (a dispatcher runs searches in threads)
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
        return Checkpoint(row.search_id, row.generation, row.n_trials, unpack_json(row.spec), unpack_json(row.state),
                          bool(row.finished))

    def save_generation(self, cp: Checkpoint, trials: Sequence[TrialRow]) -> None:
        """The generation's trials and the checkpoint after it, atomically. A trial's ``structure``
        is a :class:`Structure` (stored compactly) or text already in the stored form."""
        values = {"generation": cp.generation, "n_trials": cp.n_trials, "spec": pack_json(cp.spec),
                  "state": pack_json(cp.state), "finished": cp.finished, "updated_at": time.time()}
        enc = self._encoder(cp.search_id) if any(isinstance(t.structure, Structure) for t in trials) else None
        rows = [t if enc is None or not isinstance(t.structure, Structure)
                else t._replace(structure=enc.encode(t.number, t.structure)) for t in trials]
        bases = [dict(b, search_id=cp.search_id) for b in enc.new_bases] if enc is not None else []
        # what this write adds for good (the checkpoint replaces the previous one: not counted)
        nbytes = sum(len(b["blocks"]) for b in bases) + sum(len(r.structure) + ROW_OVERHEAD_BYTES for r in rows)
        try:
            with self.engine.begin() as c:
                self._guard(c, cp, nbytes)
                if bases:
                    c.execute(search_structures.insert(), bases)
                if rows:
                    self._insert_trials(c, cp.search_id, rows)
                updated = c.execute(search_checkpoints.update()
                                    .where(search_checkpoints.c.search_id == cp.search_id).values(**values))
                if updated.rowcount == 0:
                    c.execute(search_checkpoints.insert().values(search_id=cp.search_id, **values))
        except BaseException:
            self._forget(cp.search_id)  # its new bases were not stored: reload them next time
            raise
        if enc is not None:
            enc.committed()
        if cp.finished:
            self._forget(cp.search_id)

    def _insert_trials(self, connection: Any, search_id: str, trials: Sequence[TrialRow]) -> None:
        """Plain DBAPI parameters (SQLAlchemy's per-row parameter processing costs more than the
        search spends making the trial). PostgreSQL: one executemany (psycopg pipelines it). SQLite:
        multi-row INSERTs, as many rows a statement as its build binds parameters (2,730 rows at the
        default 32,766). This runs on the store-writer thread, which needs the GIL back after every
        statement and waits up to a switch interval (5 ms) for the search's thread to give it up:
        executemany's statement per row took ~87 ms of wall for ~20 ms of CPU a 4,096-row batch."""
        cols = f"INSERT INTO {search_trials.name} (search_id, {', '.join(TrialRow._fields)}) VALUES "
        width = len(TrialRow._fields) + 1
        if connection.dialect.paramstyle != "qmark":
            connection.exec_driver_sql(cols + "(" + ", ".join(["%s"] * width) + ")",
                                       [(search_id, *t) for t in trials])
            return
        one = "(" + ", ".join("?" * width) + ")"
        n = connection.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
        for i in range(0, len(trials), n):
            chunk = trials[i:i + n]
            connection.exec_driver_sql(cols + ", ".join([one] * len(chunk)),
                                       tuple(v for t in chunk for v in (search_id, *t)))

    def _guard(self, connection: Any, cp: Checkpoint, nbytes: int = 0) -> None:
        """Runs first inside the write's transaction; a subclass raises to refuse the write.
        ``nbytes``: roughly what the write adds to the database for good (trial rows and bases)."""

    def _encoder(self, search_id: str) -> TrialEncoder:
        with self._lock:
            enc = self._encoders.get(search_id)
            if enc is not None:
                self._encoders.move_to_end(search_id)
                return enc
        with self.engine.connect() as c:
            recent = c.execute(sa.select(search_structures.c.base, search_structures.c.blocks)
                               .where(search_structures.c.search_id == search_id)
                               .order_by(search_structures.c.base.desc()).limit(rowcodec.RECENT_BASES)).all()
        enc = TrialEncoder([(r[0], decode(unpack_base(r[1])).blocks) for r in reversed(recent)],
                           next_id=recent[0][0] + 1 if recent else 0)
        with self._lock:
            self._encoders[search_id] = enc
            while len(self._encoders) > self.MAX_ENCODERS:
                self._encoders.popitem(last=False)
        return enc

    def _forget(self, search_id: str) -> None:
        with self._lock:
            self._encoders.pop(search_id, None)

    def discard_after(self, search_id: str, n_trials: int) -> None:
        """Drop trial rows past a checkpoint (left by a generation that died before committing)."""
        self._forget(search_id)
        with self.engine.begin() as c:
            c.execute(search_trials.delete().where(search_trials.c.search_id == search_id,
                                                   search_trials.c.number >= n_trials))
            c.execute(search_structures.delete().where(search_structures.c.search_id == search_id,
                                                       search_structures.c.number >= n_trials))

    def trials(self, search_id: str, *, offset: int = 0, limit: int | None = None,
               states: Iterable[str] | None = None, after: int | None = None) -> list[dict[str, Any]]:
        """Trial rows in number order, each ``structure`` decoded to block rows. ``after``: only trials
        numbered above it (keyset paging), applied before ``offset``."""
        q = sa.select(search_trials).where(search_trials.c.search_id == search_id)
        if states is not None:
            q = q.where(search_trials.c.state.in_(list(states)))
        if after is not None:
            q = q.where(search_trials.c.number > after)
        q = q.order_by(search_trials.c.number).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(q)]
            need = referenced_bases(r["structure"] for r in rows)
            bases = {}
            if need:
                bases = {r[0]: unpack_base(r[1]) for r in c.execute(
                    sa.select(search_structures.c.base, search_structures.c.blocks).where(
                        search_structures.c.search_id == search_id, search_structures.c.base.in_(sorted(need))))}
        for r in rows:
            r["structure"] = decode_trial(r["structure"], bases)
        return rows

    def delete(self, search_id: str) -> None:
        self._forget(search_id)
        with self.engine.begin() as c:
            c.execute(search_trials.delete().where(search_trials.c.search_id == search_id))
            c.execute(search_structures.delete().where(search_structures.c.search_id == search_id))
            c.execute(search_checkpoints.delete().where(search_checkpoints.c.search_id == search_id))
