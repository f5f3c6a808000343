"""The network fit: how whole networks relate to the sum of their ops' table times.

A profile's table times are ops timed alone; a network of them runs at a different speed. The build
times ``calibration`` whole networks and fits, by bounded least squares on the relative error
(``scipy.optimize.lsq_linear``)::

    network_ms = scale * sum(ops) + per_op_ms * n_ops + offset_ms [+ per_mb_ms * sum(ops' MB)]

The memory term is for memory-bound spaces under ONNX Runtime: an op timed alone pays, in proportion
to the size of its input and output maps, for reordering them to and from the runtime's blocked
layout and for its output leaving the session, and inside a network it does not, so large-map,
few-channel ops (depthwise convs on 240x240 maps) are over-predicted by a scale common to all ops.
On compute-bound spaces it is one more free parameter fitted to ~16 noisy networks. So it is kept
only when it earns its place: when it cuts the fit's leave-one-out error on the calibration networks
by :data:`MEMORY_TERM_GAIN` (session 8, BENCHMARKS.md: it halved detection-dw's, 9.8 % -> 5.0 %, and
raised that profile's check from 65.7 % to 83.1 % within +-10 % at level, Kendall tau 0.837 -> 0.872;
on giraffe-s2d it left the error unchanged, 7.4 %, and would have lowered the check from 83.6 % to
74.1 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MEMORY_TERM_GAIN = 0.9  # the memory term is kept when its leave-one-out error is below 0.9x the fit's without it
MIN_ROWS_FOR_MEMORY_TERM = 8  # below this a leave-one-out error of a 4-term fit says nothing


@dataclass(frozen=True)
class NetworkFit:
    scale: float
    per_op_ms: float
    offset_ms: float
    per_mb_ms: float  # 0 when the memory term was not kept
    loo_error: float | None  # rms relative leave-one-out error of the fit without the memory term
    loo_error_mb: float | None  # ... and with it (None: not tried, too few rows or no sizes)

    @property
    def memory_term(self) -> bool:
        return self.per_mb_ms != 0.0


Row = Sequence[float]  # (sum of ops ms, ops, measured ms[, sum of ops' activation MB])


def _solve(rows: Sequence[Row], with_mb: bool) -> tuple[float, float, float, float]:
    import numpy as np
    from scipy.optimize import lsq_linear

    y = np.asarray([r[2] for r in rows], dtype=float)
    cols = [[r[0] for r in rows], [r[1] for r in rows], [1.0] * len(rows)]
    lo, hi = [0.25, 0.0, 0.0], [4.0, np.inf, np.inf]
    if with_mb:
        cols.append([r[3] for r in rows])
        lo.append(-np.inf)
        hi.append(np.inf)
    a = np.asarray(cols, dtype=float).T / y[:, None]
    x = [float(v) for v in lsq_linear(a, np.ones_like(y), bounds=(lo, hi)).x]
    return x[0], x[1], x[2], x[3] if with_mb else 0.0


def _predict(terms: tuple[float, float, float, float], r: Row) -> float:
    scale, per_op, offset, per_mb = terms
    return scale * r[0] + per_op * r[1] + offset + (per_mb * r[3] if len(r) > 3 else 0.0)


def loo_error(rows: Sequence[Row], with_mb: bool) -> float:
    """The rms relative error of predicting each row from the fit on all the others."""
    errs = []
    for i, r in enumerate(rows):
        terms = _solve([q for j, q in enumerate(rows) if j != i], with_mb)
        errs.append(_predict(terms, r) / r[2] - 1.0)
    return math.sqrt(math.fsum(e * e for e in errs) / len(errs))


def fit_network(rows: Sequence[Row]) -> NetworkFit:
    """Fit ``rows`` ((ops_ms, n_ops, measured_ms[, ops_mb]) per calibration network) with 0.25 <= scale
    <= 4, per_op_ms >= 0 and offset_ms >= 0 (a fixed overhead is never negative: an unbounded fit on
    noisy timings predicted < 0 ms for tiny networks) and ``per_mb_ms`` of either sign (the predictor
    floors each op, :data:`zennas.latency.predict.FLOOR`), the memory term kept by the rule above."""
    base = _solve(rows, False)
    if len(rows) < MIN_ROWS_FOR_MEMORY_TERM or any(len(r) < 4 for r in rows):
        return NetworkFit(*base, loo_error=None, loo_error_mb=None)
    e0, e1 = loo_error(rows, False), loo_error(rows, True)
    terms = _solve(rows, True) if e1 < MEMORY_TERM_GAIN * e0 else base
    return NetworkFit(*terms, loo_error=e0, loo_error_mb=e1)
