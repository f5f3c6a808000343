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
"""

from __future__ import annotations

import logging
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

    def to_dict(self) -> dict[str, Any]:
        err = None
        if self.measured_ms:
            err = (self.predicted_ms - self.measured_ms) / self.measured_ms
        return {"rank": self.rank, "number": self.number, "score": self.score, "predicted_ms": self.predicted_ms,
                "measured_ms": self.measured_ms, "measured_p10_ms": self.measured_p10_ms,
                "measured_p90_ms": self.measured_p90_ms, "error": err, "meets_budget": self.meets,
                "skipped": self.skipped, "worker": self.worker, "structure": self.structure.to_dict()}


def measure_task(profile: Profile, s: Structure, number: int, *, runs: int, warmup: int,
                 resource: str | None) -> dict[str, Any]:
    """An evaluation task that times ``s`` whole in the profile's runtime (no score)."""
    return {"number": number, "structure": [b.to_dict() for b in s.blocks], "score": None, "score_settings": {},
            "height": profile.height, "width": profile.width,
            "latency": {"runtime": profile.runtime, "threads": profile.threads, "batch": profile.batch,
                        "opset": profile.opset, "runs": runs, "warmup": warmup, "resource": resource,
                        "clock": profile.clock},
            "latency_budget_ms": None}


def _width(backend: Any, resource: str | None) -> int:
    """How many measurements the backend runs at once (a wave): its ``parallelism``, else 1."""
    f = getattr(backend, "parallelism", None)
    return max(1, int(f(resource))) if f is not None else 1


def verify(candidates: list[tuple[int, float, Structure, float]], profile: Profile, budget_ms: float | None,
           backend: Any, *, runs: int, warmup: int, resource: str | None, mode: str = "until-met") -> dict[str, Any]:
    """Measure ``candidates`` ((number, score, structure, predicted_ms), best score first) on ``backend``.

    Returns the record the result carries: each candidate predicted vs measured (or ``skipped``), the
    winner's index (the first that meets the budget when measured), and a warning when the measuring
    worker's fingerprint differs from the profile's. Raises :class:`LatencyBudgetError` when none meets it."""
    if mode not in VERIFY_MODES:
        raise SpecError(f"latency.verify must be one of {', '.join(VERIFY_MODES)}, got {mode!r}",
                        field="latency.verify")
    width = _width(backend, resource)
    recs: list[dict[str, Any]] = []
    for lo in range(0, len(candidates), width):
        wave = candidates[lo:lo + width]
        recs += backend.evaluate([measure_task(profile, s, n, runs=runs, warmup=warmup, resource=resource)
                                  for n, _, s, _ in wave])
        if mode == "until-met" and any(_meets(r, budget_ms) for r in recs[lo:]):
            break
    rows: list[Verified] = []
    warnings: list[str] = []
    for i, (number, score, s, pred) in enumerate(candidates):
        if i >= len(recs):
            rows.append(Verified(i, number, score, s, pred, None, None, None, "", False, skipped=True))
            continue
        rec = recs[i]
        m = _measured(rec)
        if m is None:
            warnings.append(f"candidate {i} (trial {number}) could not be measured: {rec.get('reason')}")
        rows.append(Verified(i, number, score, s, pred, m, rec.get("latency_p10_ms"), rec.get("latency_p90_ms"),
                             str(rec.get("worker", "")), _meets(rec, budget_ms)))
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
    out = {"mode": "predicted", "verify": mode, "measured": len(recs), "budget_ms": budget_ms,
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
    """What a verified candidate's row says about the budget (CLI, report)."""
    if candidate.get("skipped"):
        return "not measured (a better-ranked candidate met the budget)"
    return "meets" if candidate.get("meets_budget") else "over"
