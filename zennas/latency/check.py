"""How well a profile predicts: whole backbones measured in the profile's runtime against their
predictions (``zennas profile check``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zennas.latency.interleave import GROUP_BYTES, Drifted, structure_bytes, time_grouped
from zennas.latency.predict import Predictor
from zennas.latency.profile import Profile
from zennas.space.structure import Structure


@dataclass(frozen=True)
class CheckRow:
    structure: Structure
    predicted_ms: float
    measured_ms: float
    p10_ms: float
    p90_ms: float
    drift: float = 1.0  # the drift factor applied to the measurement (zennas.latency.interleave)

    @property
    def error(self) -> float:
        """Relative error of the prediction: (predicted - measured) / measured."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms

    def to_dict(self) -> dict[str, Any]:
        return {"predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms, "measured_p10_ms": self.p10_ms,
                "measured_p90_ms": self.p90_ms, "drift": self.drift, "error": self.error, "structure": self.structure.to_dict()}


@dataclass(frozen=True)
class CheckReport:
    rows: tuple[CheckRow, ...]

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def within_10pct(self) -> float:
        return sum(abs(r.error) <= 0.10 for r in self.rows) / self.n if self.rows else float("nan")

    @property
    def level(self) -> float:
        """The median of measured / predicted: the machine's speed now against the profile's (where the
        predictor is unbiased). A shared machine's speed moves by tens of percent over minutes, which
        moves every measurement of a check together."""
        if not self.rows:
            return float("nan")
        return statistics.median(r.measured_ms / r.predicted_ms for r in self.rows)

    @property
    def within_10pct_at_level(self) -> float:
        """The share within +-10 % once every prediction is multiplied by :attr:`level`: how well the
        predictor orders and spaces the structures, apart from the machine's speed since the build."""
        if not self.rows:
            return float("nan")
        k = self.level
        return sum(abs(r.predicted_ms * k / r.measured_ms - 1) <= 0.10 for r in self.rows) / self.n

    @property
    def mape(self) -> float:
        return math.fsum(abs(r.error) for r in self.rows) / self.n if self.rows else float("nan")

    @property
    def kendall_tau(self) -> float:
        if self.n < 2:
            return float("nan")
        from scipy.stats import kendalltau

        res = kendalltau([r.predicted_ms for r in self.rows], [r.measured_ms for r in self.rows])
        return float(res.statistic)

    def worst(self, k: int = 5) -> list[tuple[int, CheckRow]]:
        return sorted(enumerate(self.rows), key=lambda x: -abs(x[1].error))[:k]

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"n": self.n, "within_10pct": num(self.within_10pct), "mape": num(self.mape),
                "kendall_tau": num(self.kendall_tau), "level": num(self.level),
                "within_10pct_at_level": num(self.within_10pct_at_level), "worst": [i for i, _ in self.worst()],
                "rows": [r.to_dict() for r in self.rows]}


def check_profile(profile: Profile, structures: Sequence[Structure], *, runs: int = 10,
                  progress: Callable[[int, int], None] | None = None, group_bytes: int = GROUP_BYTES) -> CheckReport:
    """Measure each structure whole in the profile's runtime, threads and batch, at its input size:
    ``runs`` interleaved rounds over groups of structures held at once (under ``group_bytes``), the
    first structure timed in every group as the drift anchor (:mod:`zennas.latency.interleave`)."""
    from zennas.latency.runtimes import Runner, TimingSettings

    pred = Predictor(profile)
    runner = Runner(profile.runtime, threads=profile.threads, batch=profile.batch, opset=profile.opset)
    timing = TimingSettings(warmup=1, min_runs=runs, max_runs=runs, min_time_s=0.0, clock=profile.clock)
    h, w, done = profile.height, profile.width, 0

    def group_done(part: list[Drifted[Structure]], _reference_ms: float) -> None:
        nonlocal done
        done += len(part)
        if progress is not None:
            progress(done, len(structures))

    with runner.calling():
        timed, _ = time_grouped(list(structures), lambda s: runner.prepare_structure(s, h, w),
                             lambda s: structure_bytes(s, h, w, profile.batch), timing, cap_bytes=group_bytes,
                             on_group=group_done)
    return CheckReport(tuple(CheckRow(d.item, pred.predict(d.item), d.timing.median_ms, d.timing.p10_ms,
                                      d.timing.p90_ms, d.factor) for d in timed))
