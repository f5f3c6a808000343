"""Predicted-latency searches: the top candidates, and their verification on the device at the end.

A search with a latency profile predicts every candidate's latency from the profile's table (a cost
term of the evaluator, like FLOPs). At the end the top-k distinct candidates by score (all within the
predicted budget) are measured whole, in the profile's runtime, threads and batch, on a worker of the
device (the evaluation backend, whose ``latency.resource`` routes the tasks to the labelled node, or
this process); the winner is the best-scoring one whose *measured* latency meets the budget.

They are measured in rank order, in waves as wide as the backend measures at once (one in this
process). With ``latency.verify = "until-met"`` (the default) verification stops after the first
wave that holds a candidate meeting the budget: every better-ranked candidate has been measured by
then, so the winner is the one measuring all ``k`` would give; the rest are reported as not measured.
``"all"`` measures every one of the ``k`` (a fuller predicted-vs-measured table, k times the time).

With ``latency.speculate`` (the default) the measuring starts while the search runs: a
:class:`Speculator` measures the search's current top candidates, in rank order, as they change,
on the measuring worker the verification would use, which the search itself leaves idle. At the end
the verification reuses every measurement of a candidate still in the top ``k`` (the same task, so
the same number) and measures only the ones missing, so a search whose winner was found before its
last measurement ended pays no verification time at all. Measuring in this process' machine while
the search computes needs a core the search does not use: without one (one CPU), nothing is measured
before the search ends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zennas.errors import SpecError, ZenNASError
from zennas.latency.profile import Fingerprint, Profile
from zennas.search.rows import encode
from zennas.search.spec import VERIFY_MODES
from zennas.space.structure import Structure

log = logging.getLogger(__name__)


class LatencyBudgetError(ZenNASError):
    """No verified candidate meets the latency budget when measured on the device."""


class TopK:
    """The ``k`` best-scoring distinct structures seen (ties: the earlier trial)."""

    def __init__(self, k: int, items: list[list[Any]] | None = None) -> None:
        self.k = k
        self.items: list[list[Any]] = [list(x) for x in items or []]  # [score, number, encoded rows]
        self.version = 0  # how many times the items changed

    def offer(self, score: float, number: int, structure: Structure) -> None:
        items = self.items
        if len(items) >= self.k and score <= items[-1][0]:
            return
        rows = encode(structure)  # only for a structure that enters: encoding costs about a mutation
        for x in items:
            if x[2] == rows:
                return  # already held (a structure keeps its first score)
        items.append([score, number, rows])
        items.sort(key=lambda x: (-x[0], x[1]))
        del items[self.k:]
        self.version += 1

    def state(self) -> list[list[Any]]:
        return [list(x) for x in self.items]


@dataclass(frozen=True)
class Verified:
    rank: int  # 0 = best score
    number: int  # trial number
    score: float
    structure: Structure
    predicted_ms: float
    measured_ms: float | None  # None: the measurement failed
    measured_p10_ms: float | None
    measured_p90_ms: float | None
    worker: str
    meets: bool
    skipped: bool = False  # not measured: a better-ranked candidate met the budget ("until-met")
    speculative: bool = False  # measured while the search ran (Speculator), not after it
    runs: int | None = None  # timed runs (fewer than latency.runs when the verdict settled first)

    def to_dict(self) -> dict[str, Any]:
        err = None
        if self.measured_ms:
            err = (self.predicted_ms - self.measured_ms) / self.measured_ms
        d = {"rank": self.rank, "number": self.number, "score": self.score, "predicted_ms": self.predicted_ms,
             "measured_ms": self.measured_ms, "measured_p10_ms": self.measured_p10_ms,
             "measured_p90_ms": self.measured_p90_ms, "error": err, "meets_budget": self.meets,
             "skipped": self.skipped, "speculative": self.speculative, "runs": self.runs, "worker": self.worker,
             "structure": self.structure.to_dict()}
        d["verdict"] = verdict(d)
        return d


def measure_task(profile: Profile, s: Structure, number: int, *, runs: int, warmup: int,
                 resource: str | None, budget_ms: float | None = None) -> dict[str, Any]:
    """An evaluation task that times ``s`` whole in the profile's runtime (no score). With
    ``budget_ms`` the timing stops early once the verdict is settled (:func:`verdict_settled`)."""
    return {"number": number, "structure": [b.to_dict() for b in s.blocks], "score": None, "score_settings": {},
            "height": profile.height, "width": profile.width,
            "latency": {"runtime": profile.runtime, "threads": profile.threads, "batch": profile.batch,
                        "opset": profile.opset, "runs": runs, "warmup": warmup, "resource": resource,
                        "clock": profile.clock, "settle_at_ms": budget_ms},
            "latency_budget_ms": None}


SETTLE_RUNS = 3  # timed runs at least, before a verification's timing may stop early


def verdict_settled(times: list[float], budget_ms: float | None) -> bool:
    """Whether the timed runs so far settle a candidate's verdict: at least :data:`SETTLE_RUNS` runs,
    all on one side of the budget (so their median is there too, and so would more runs' be, short of
    a change in the machine). A verification's timing stops there instead of running all ``runs``."""
    if budget_ms is None or len(times) < SETTLE_RUNS:
        return False
    return max(times) <= budget_ms or min(times) > budget_ms


def _width(backend: Any, resource: str | None) -> int:
    """How many measurements the backend runs at once (a wave): its ``parallelism``, else 1."""
    f = getattr(backend, "parallelism", None)
    return max(1, int(f(resource))) if f is not None else 1


def verify(candidates: list[tuple[int, float, Structure, float]], profile: Profile, budget_ms: float | None,
           backend: Any, *, runs: int, warmup: int, resource: str | None, mode: str = "until-met",
           known: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Measure ``candidates`` ((number, score, structure, predicted_ms), best score first) on ``backend``.

    ``known``: records of candidates already measured (by trial number; a :class:`Speculator`'s),
    used as they are. Returns the record the result carries: each candidate predicted vs measured
    (or ``skipped``), the winner's index (the first that meets the budget when measured), and a
    warning when the measuring worker's fingerprint differs from the profile's. Raises
    :class:`LatencyBudgetError` when none meets it."""
    if mode not in VERIFY_MODES:
        raise SpecError(f"latency.verify must be one of {', '.join(VERIFY_MODES)}, got {mode!r}",
                        field="latency.verify")
    width = _width(backend, resource)
    known = known or {}
    recs: dict[int, dict[str, Any]] = {i: known[c[0]] for i, c in enumerate(candidates) if c[0] in known}
    limit = len(candidates)
    if mode == "until-met":  # a known candidate that meets the budget: nothing ranked below it is needed
        limit = next((i for i in sorted(recs) if _meets(recs[i], budget_ms)), limit)
    todo = [i for i in range(limit) if i not in recs]
    for lo in range(0, len(todo), width):
        wave = todo[lo:lo + width]
        got = backend.evaluate([measure_task(profile, candidates[i][2], candidates[i][0], runs=runs, warmup=warmup,
                                             resource=resource, budget_ms=budget_ms) for i in wave])
        recs.update(zip(wave, got, strict=True))
        if mode == "until-met" and any(_meets(recs[i], budget_ms) for i in wave):
            break  # every better-ranked candidate is measured (known, or in an earlier wave)
    rows: list[Verified] = []
    warnings: list[str] = []
    for i, (number, score, s, pred) in enumerate(candidates):
        if i not in recs:
            rows.append(Verified(i, number, score, s, pred, None, None, None, "", False, skipped=True))
            continue
        rec = recs[i]
        m = _measured(rec)
        if m is None:
            warnings.append(f"candidate {i} (trial {number}) could not be measured: {rec.get('reason')}")
        rows.append(Verified(i, number, score, s, pred, m, rec.get("latency_p10_ms"), rec.get("latency_p90_ms"),
                             str(rec.get("worker", "")), _meets(rec, budget_ms), speculative=number in known,
                             runs=rec.get("latency_runs")))
        fp = rec.get("fingerprint")
        if fp:
            try:
                diff = profile.fingerprint.differences(Fingerprint(**{**fp, "libraries": fp.get("libraries", {})}))
            except TypeError:
                diff = ["fingerprint"]
            if diff:
                msg = (f"the measuring worker {rec.get('worker')} differs from where the profile was measured "
                       f"({', '.join(diff)}): predictions may not hold there")
                if msg not in warnings:
                    warnings.append(msg)
    winner = next((r.rank for r in rows if r.meets), None)
    out = {"mode": "predicted", "verify": mode, "measured": len(recs),
           "measured_during_search": sum(r.speculative for r in rows), "budget_ms": budget_ms,
           "candidates": [r.to_dict() for r in rows], "winner": winner, "warnings": warnings}
    if winner is None and rows:
        measured = [r for r in rows if r.measured_ms is not None]
        if measured and budget_ms is not None:
            c = min(measured, key=lambda r: r.measured_ms or 0.0)
            msg = (f"none of the top {len(rows)} candidates meets budgets.latency_ms = {budget_ms:g} ms when measured "
                   f"on the device; the closest is candidate {c.rank} (trial {c.number}, score {c.score:.4f}): "
                   f"predicted {c.predicted_ms:.2f} ms, measured {c.measured_ms:.2f} ms. Rebuild the profile on "
                   "this device, or search with a smaller budget")
        else:
            msg = f"none of the top {len(rows)} candidates could be measured: {'; '.join(warnings)}"
        err = LatencyBudgetError(msg, field="budgets.latency_ms")
        err.record = out  # type: ignore[attr-defined]
        raise err
    return out


def _measured(rec: dict[str, Any]) -> float | None:
    ok = rec.get("state") == "complete" and rec.get("latency_ms") is not None
    return float(rec["latency_ms"]) if ok else None


def _meets(rec: dict[str, Any], budget_ms: float | None) -> bool:
    m = _measured(rec)
    return m is not None and (budget_ms is None or m <= budget_ms)


def verdict(candidate: dict[str, Any]) -> str:
    """What a verified candidate's row says about the budget (its ``verdict``: the CLI, the report and
    the console show it)."""
    if candidate.get("skipped"):
        return "not measured (a better-ranked candidate met the budget)"
    return "meets" if candidate.get("meets_budget") else "over"


def refused_record(number: int, limit: str) -> dict[str, Any]:
    """The record of a measurement the service's evaluation limits refused (``limit``: the one broken)."""
    return {"number": number, "state": "rejected", "reason": f"over this service's {limit} limit for one evaluation"}


def spare_core(threads: int) -> bool:
    """Whether this machine has a core for a measurement of ``threads`` threads beside the search's own."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return n > threads


class Speculator:
    """Measures a predicted-latency search's top candidates while the search runs.

    The search calls :meth:`offer` with its top ``k`` (best first) whenever they change; one
    thread measures, one candidate at a time, the best-ranked one not yet measured, on ``backend``
    (which nothing else uses until :meth:`finish`), and stops once a measured one meets the budget
    (``until-met``: nothing ranked below it would be used) until the top changes again. ``refuse``
    (the service's limits): a reason not to measure a structure, or None. :meth:`finish` waits for
    the measurement in progress and returns every record by trial number; :meth:`abandon` (a
    stopped search) does not use them."""

    def __init__(self, backend: Any, profile: Profile, budget_ms: float | None, *, runs: int, warmup: int,
                 resource: str | None, mode: str = "until-met",
                 refuse: Callable[[Structure], str | None] | None = None) -> None:
        self.backend, self.profile, self.budget_ms = backend, profile, budget_ms
        self.runs, self.warmup, self.resource, self.mode, self.refuse = runs, warmup, resource, mode, refuse
        self.done: dict[int, dict[str, Any]] = {}
        self.seconds = 0.0  # measuring time spent (while the search ran)
        self._want: list[tuple[int, Any]] = []  # the current top, best first: (number, encoded rows)
        self._busy: int | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="zennas-speculate", daemon=True)
        self._thread.start()

    def offer(self, items: list[list[Any]]) -> None:
        """The search's current top (``TopK.items``: [score, number, encoded rows], best first)."""
        want = [(int(n), rows) for _, n, rows in items]  # decoded only when picked
        with self._cond:
            self._want = want
            self._cancel_stale()
            self._cond.notify()

    def _cancel_stale(self) -> None:
        """Stop the measurement in progress when it is no longer the next one wanted: it left the top,
        or an unmeasured candidate now ranks above it (the top's best is what the end needs first).
        Only a backend that can (the local measuring process) stops part-way; others finish it."""
        busy = self._busy
        cancel = getattr(self.backend, "cancel", None)
        if busy is None or cancel is None:
            return
        for n, _ in self._want:
            if n == busy:
                return  # still the best-ranked one not yet measured
            rec = self.done.get(n)
            if rec is None or (self.mode == "until-met" and _meets(rec, self.budget_ms)):
                break  # an unmeasured one ranks above it, or a better one already meets the budget
        cancel(busy)  # again for the same one: the same value, no harm

    @property
    def measured(self) -> int:
        """Measurements completed (of candidates in the top, or since out of it)."""
        return len(self.done)

    def idle(self) -> bool:
        """Nothing in progress and nothing left to measure in the current top."""
        with self._cond:
            return self._busy is None and self._next() is None

    def _next(self) -> tuple[int, Any] | None:
        for n, rows in self._want:
            rec = self.done.get(n)
            if rec is None:
                return (n, rows) if n != self._busy else None
            if self.mode == "until-met" and _meets(rec, self.budget_ms):
                return None
        return None

    def _loop(self) -> None:
        import time

        from zennas.search.rows import decode

        cancel = getattr(self.backend, "cancel", None)
        while True:
            with self._cond:
                pick = self._next()
                while not self._closed and pick is None:
                    self._cond.wait()
                    pick = self._next()
                if self._closed or pick is None:
                    return
                self._busy = pick[0]
                if cancel is not None:
                    cancel(None)  # a stop asked for an earlier timing (of this one, or another) is not this one's
            n, s = pick[0], decode(pick[1])
            t0 = time.perf_counter()
            reason = self.refuse(s) if self.refuse is not None else None
            if reason is not None:
                rec = refused_record(n, reason)
            else:
                try:
                    rec = self.backend.evaluate([measure_task(self.profile, s, n, runs=self.runs, warmup=self.warmup,
                                                              resource=self.resource, budget_ms=self.budget_ms)])[0]
                except Exception as e:  # a failed measurement is measured again by the verification
                    log.warning("measuring candidate %d while the search ran failed: %s", n, e)
                    rec = None
            with self._cond:
                self.seconds += time.perf_counter() - t0
                self._busy = None
                if rec is not None and rec.get("state") not in ("failed", "cancelled"):  # else: measured at the end
                    self.done[n] = rec
                self._cond.notify_all()

    def finish(self) -> dict[int, dict[str, Any]]:
        """Stop after the measurement in progress, or stop that one if the final top does not need it
        next (the backend is the caller's again when this returns); the records."""
        with self._cond:
            self._closed = True
            self._cancel_stale()
            self._cond.notify_all()
        self._thread.join()
        cancel = getattr(self.backend, "cancel", None)
        if cancel is not None:
            cancel(None)  # the verification may measure a candidate whose timing was stopped here
        return dict(self.done)

    def abandon(self) -> None:
        """Stop without waiting, where the backend ends with the search (the local measuring process)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
