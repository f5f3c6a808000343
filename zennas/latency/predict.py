"""Predicted latency: the sum of a structure's op latencies read from a profile, plus the per-network
overhead fitted when the profile was built.

Between grid points an op's latency is interpolated linearly in log(latency) over log(channels)
(what ``scipy.interpolate.RegularGridInterpolator(method="linear", fill_value=None)`` computes, as
TinyNAS's OpPredictor interpolates on its table), which is exact on grid points and follows the power
law ``latency ~ cin * cout`` of a conv whose efficiency changes slowly with its width. :class:`LogGrid`
restates that interpolation for one point at a time: a scipy call costs tens of microseconds of
argument handling, which made the lookups of new blocks most of a latency-budgeted search's time; the
tests hold it equal to scipy's.

Outside the grid the table's curve is not extrapolated: at small feature maps the cells are
dominated by call overhead and timing noise, and a log-log line through two noisy neighbours,
carried far below them, predicted a 1 ms backbone at 900-2000 ms on a loaded machine. Instead a
channel count below an axis takes the axis' first point (an op is not predicted faster than the
smallest one timed: an over-estimate, safe for a budget), and one above it takes the last point
scaled by the op's FLOPs (:meth:`Op.flops`), which is how the build estimates the cells over its
FLOPs cap. Lookups are cached per op and per (block, input size), and in a search :class:`LatencyTerm`
is one of the evaluator's terms (cached per block and position), so a search pays the interpolation
once per new block, like the FLOPs.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import product

from zennas.cost import BlockCost
from zennas.latency.ops import Op, TableKey, block_sizes, block_unit_runs
from zennas.latency.profile import Profile, ProfileError
from zennas.search.evaluate import Position, Term
from zennas.space.structure import Block, Structure

FLOOR = 0.25  # the least share of its scaled table time an op costs, whatever the memory term says


class LogGrid:
    """log(value) interpolated linearly over log(point) on a rectilinear grid, extrapolated linearly
    outside it, one point at a time: scipy's ``RegularGridInterpolator`` (linear, ``fill_value=None``)
    restated: per axis the cell ``i`` (``searchsorted(axis, x) - 1`` clipped to the first and last
    cells) and the unclipped fraction ``t`` along it, then the 2^d corners weighted by ``t`` / ``1 - t``."""

    def __init__(self, axes: tuple[tuple[int, ...], ...], values: tuple[float, ...]) -> None:
        self.points = axes  # the grid's channel points per axis
        self.axes = tuple(tuple(math.log(c) for c in a) for a in axes)  # >= 2 increasing points each
        self.values = tuple(math.log(v) for v in values)  # C order over the axes
        strides, n = [], 1
        for a in reversed(axes):
            strides.append(n)
            n *= len(a)
        self.strides = tuple(reversed(strides))
        self.corners = tuple(product((0, 1), repeat=len(axes)))

    def __call__(self, point: tuple[int, ...]) -> float:
        """The interpolated log value at ``point`` (channels on the axes)."""
        cells, fractions = [], []
        for a, c in zip(self.axes, point, strict=True):
            x = math.log(c)
            i = min(max(bisect_left(a, x) - 1, 0), len(a) - 2)
            cells.append(i)
            fractions.append((x - a[i]) / (a[i + 1] - a[i]))
        total = 0.0
        for corner in self.corners:
            w, at = 1.0, 0
            for i, t, up, stride in zip(cells, fractions, corner, self.strides, strict=True):
                w *= t if up else 1.0 - t
                at += (i + up) * stride
            total += w * self.values[at]
        return total


class Predictor:
    """Predicts a backbone's latency in a profile's runtime, threads, batch and input size."""

    def __init__(self, profile: Profile) -> None:
        if not profile.complete:
            raise ProfileError("the profile is not complete (a build that stopped part-way); finish it with "
                               "`zennas profile build ... --resume`", field="complete")
        self.profile = profile
        assert profile.overhead is not None  # a complete profile has one (validated)
        self.scale = profile.overhead.scale
        self.per_op_ms = profile.overhead.per_op_ms
        self.offset_ms = profile.overhead.offset_ms
        self.per_mb_ms = profile.overhead.per_mb_ms or 0.0
        self.batch = profile.batch
        self.call_ms = profile.call_overhead_ms
        self._interp: dict[TableKey, LogGrid] = {t.key: LogGrid(t.axes, t.median_ms)  # type: ignore[arg-type]
                                                 for t in profile.tables}
        self._in_network: dict[TableKey, float] = {t.key: t.in_network for t in profile.tables
                                                   if t.in_network is not None}
        self._ops: dict[Op, float] = {}
        self._blocks: dict[tuple[Block, int, int], float] = {}

    def table_ms(self, op: Op) -> float:
        """The table's (interpolated) median for ``op``, as measured: a call of the op alone."""
        f = self._interp.get(op.key)
        if f is None:
            p = self.profile
            raise ProfileError(
                f"the profile has no table for op {op.key.label()!r}: it was built for space {p.space!r} at "
                f"{p.height}x{p.width}; build a profile for this space and input size", field="profile")
        axes = f.points
        inside = tuple(min(max(c, a[0]), a[-1]) for c, a in zip(op.point, axes, strict=True))
        v = math.exp(f(inside))
        if inside != op.point:
            raised = tuple(max(c, a[0]) for c, a in zip(op.point, axes, strict=True))  # below: the first point
            if raised != inside:  # above an axis: the last point, scaled by FLOPs
                v *= Op(op.key, raised).flops() / Op(op.key, inside).flops()
        return v

    def op_ms(self, op: Op) -> float:
        """The op's share of a network's latency: its table time less the runtime's empty-call cost,
        times its table's in-network ratio (:mod:`zennas.latency.innetwork`; 1 where none was measured),
        scaled by the network fit, plus the fit's memory term (``per_mb_ms`` per MB of the op's input
        and output, usually negative: what the op alone paid for moving its tensors and a network does
        not), never below :data:`FLOOR` of the scaled time (an op is never free for the search), plus
        the in-network dispatch cost of one op."""
        v = self._ops.get(op)
        if v is None:
            f = self._in_network.get(op.key, 1.0)
            t = self.scale * f * max(0.0, self.table_ms(op) - self.call_ms)
            v = max(t + self.per_mb_ms * op.activation_mb(self.batch), FLOOR * t) + self.per_op_ms
            self._ops[op] = v
        return v

    def block_ms(self, b: Block, height: int, width: int) -> float:
        key = (b, height, width)
        v = self._blocks.get(key)
        if v is None:
            if len(self._blocks) >= 1 << 18:
                self._blocks.clear()  # bounded: a long search keeps making new blocks
            v = self._blocks[key] = math.fsum(n * self.op_ms(op) for unit, n in block_unit_runs(b, height, width)
                                              for op in unit)
        return v

    def ops_ms(self, s: Structure, height: int | None = None, width: int | None = None) -> float:
        """The sum of the structure's op terms, before the per-network offset."""
        h = self.profile.height if height is None else height
        w = self.profile.width if width is None else width
        return math.fsum(self.block_ms(b, bh, bw) for b, (bh, bw) in zip(s.blocks, block_sizes(s, h, w),
                                                                           strict=True))

    def network_ms(self, ops_ms: float) -> float:
        return ops_ms + self.offset_ms

    def predict(self, s: Structure) -> float:
        """Predicted median latency of the whole backbone (ms) at the profile's input size."""
        return self.network_ms(self.ops_ms(s))


class LatencyTerm(Term):
    """The predicted latency as a cost term of the search's evaluator (:mod:`zennas.search.evaluate`):
    a block's share is its ops' predicted time at its position's input size, cached per position
    like the FLOPs. Block positions keep their input size through a search (mutations never change
    a stride), so the sizes are those of the start structure. The per-network offset is the first
    position's (a constant of every candidate), so the term's total is :meth:`Predictor.predict`."""

    name = "latency_ms"

    def __init__(self, predictor: Predictor, start: Structure) -> None:
        self.predictor = predictor
        p = predictor.profile
        self.sizes = tuple(block_sizes(start, p.height, p.width))

    def share(self, block: Block, cost: BlockCost, at: Position) -> float:
        h, w = self.sizes[at.index]
        v = self.predictor.block_ms(block, h, w)
        return v + self.predictor.offset_ms if at.index == 0 else v

    def ms(self, s: Structure) -> float:
        """The predicted latency of ``s`` (outside an evaluator: uncached per position)."""
        pr = self.predictor
        return pr.network_ms(math.fsum(pr.block_ms(b, h, w) for b, (h, w) in zip(s.blocks, self.sizes, strict=True)))
