"""In-driver evaluation: budgets and the closed-form score, incrementally from per-block caches.

A mutation changes one or two blocks and never a stride, so each block position keeps a fixed input
area and stage layout: a candidate's FLOPs are a dot product of cached per-block figures with fixed
per-position areas, and its entropy-analytic score a running sum over cached per-block log-stds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from zennas.cost import BOTTLENECK_DEPTHWISE, block_cost, bottleneck_cost
from zennas.score.analytic import _block_log_std
from zennas.search.spec import Budgets
from zennas.space.mutation import RawBlock
from zennas.space.structure import Block, Structure


@dataclass(frozen=True, slots=True)
class CostRecord:
    flops: float
    params: float
    layers: int
    latency_ms: float | None = None  # predicted from a latency profile (None: no profile)


class LatencyCost(Protocol):
    """A predicted-latency cost term (:class:`zennas.latency.LatencyTerm`): per-block cached like FLOPs."""

    def ms(self, s: Structure) -> float: ...

    def ms_raw(self, blocks: Sequence[RawBlock]) -> float: ...


class DriverEvaluator:
    """Costs, budget checks and (optionally) the analytic score for structures of one stride layout."""

    def __init__(self, start: Structure, height: int, width: int, budgets: Budgets,
                 weights: Sequence[float] | None, latency: LatencyCost | None = None) -> None:
        self.latency = latency  # predicted latency (a profile's table); None: latency is measured, not here
        area = float(height * width)
        areas: list[float] = []
        for b in start.blocks:
            areas.append(area)
            area /= b.stride * b.stride
        self.areas = tuple(areas)
        self.strides = tuple(b.stride for b in start.blocks)
        n = len(start.blocks)
        self.stage_ends = tuple(i for i in range(n) if i == n - 1 or start.blocks[i + 1].stride == 2)
        self.weights = tuple(weights) if weights is not None else None
        if self.weights is not None and len(self.weights) != len(self.stage_ends):
            from zennas.errors import SpecError

            raise SpecError(f"stage_weights has {len(self.weights)} entries but the structures have "
                            f"{len(self.stage_ends)} stages", field="stage_weights")
        self.budgets = budgets
        # per position: (input area, the stage weight if the position ends a stage, else None)
        ends = dict(zip(self.stage_ends, self.weights or (), strict=False))
        self._positions = tuple((a, ends.get(i)) for i, a in enumerate(self.areas))
        self._cache: dict[Block, tuple[float, float, int, float]] = {}
        self._raw_cache: dict[RawBlock, tuple[float, float, int, float]] = {}
        self._limits = (
            math.inf if budgets.flops is None else budgets.flops,
            math.inf if budgets.params is None else budgets.params,
            math.inf if budgets.layers is None else budgets.layers,
        )

    def _block(self, b: Block) -> tuple[float, float, int, float]:
        c = self._cache.get(b)
        if c is None:
            bc = block_cost(b)
            c = (bc.flops_per_pixel, bc.params, bc.layers, _block_log_std(b))
            self._cache[b] = c
        return c

    def costs(self, s: Structure) -> CostRecord:
        flops = params = 0.0
        layers = 0
        for b, a in zip(s.blocks, self.areas, strict=True):
            f, p, n, _ = self._block(b)
            flops += f * a
            params += p
            layers += n
        return CostRecord(flops, params, layers, self.latency.ms(s) if self.latency is not None else None)

    def violated(self, c: CostRecord) -> str | None:
        """The first budget the costs break (checked before any scoring), or None."""
        b = self.budgets
        if b.layers is not None and c.layers > b.layers:
            return "layers"
        if b.flops is not None and c.flops > b.flops:
            return "flops"
        if b.params is not None and c.params > b.params:
            return "params"
        if b.latency_ms is not None and c.latency_ms is not None and c.latency_ms > b.latency_ms:
            return "latency_ms"
        return None

    def evaluate(self, s: Structure) -> tuple[CostRecord, float]:
        """Costs and entropy-analytic in one pass over the blocks (the search's hot path)."""
        assert self.weights is not None
        flops = params = acc = total = 0.0
        layers = 0
        ends, weights, cache = self.stage_ends, self.weights, self._cache
        k = 0
        for i, (b, a) in enumerate(zip(s.blocks, self.areas, strict=True)):
            c = cache.get(b)
            if c is None:
                c = self._block(b)
            flops += c[0] * a
            params += c[1]
            layers += c[2]
            acc += c[3]
            if i == ends[k]:
                w = weights[k]
                if w:
                    total += w * (acc + math.log(b.out_channels))
                k += 1
        return CostRecord(flops, params, layers), total

    def analytic(self, s: Structure) -> float:
        """entropy-analytic, from the cached per-block log-stds."""
        assert self.weights is not None
        acc = 0.0
        total = 0.0
        ends = self.stage_ends
        k = 0
        blocks = s.blocks
        for i, b in enumerate(blocks):
            acc += self._block(b)[3]
            if i == ends[k]:
                w = self.weights[k]
                if w:
                    total += w * (acc + math.log(b.out_channels))
                k += 1
        return total

    def evaluate_raw(self, blocks: tuple[RawBlock, ...]) -> tuple[float, float, int, float]:
        """(flops, params, layers, entropy-analytic) of a mutation's raw blocks: the search's hot path.

        Same figures as :meth:`evaluate` (same per-block values, summed in the same order), keyed by
        raw tuples, whose hash and equality run in C."""
        flops = params = acc = total = 0.0
        layers = 0
        cache = self._raw_cache
        for b, (area, w) in zip(blocks, self._positions, strict=True):
            c = cache.get(b)
            if c is None:
                c = cache[b] = self._raw_block(b)
            flops += c[0] * area
            params += c[1]
            layers += c[2]
            acc += c[3]
            if w:  # a stage end with a non-zero weight
                total += w * (acc + math.log(b[2]))
        return flops, params, layers, total

    def _raw_block(self, b: RawBlock) -> tuple[float, float, int, float]:
        depthwise = BOTTLENECK_DEPTHWISE.get(b[0])
        if depthwise is not None and b[6] is not None:  # the common miss: no Block object, no lru lookups
            bc = bottleneck_cost(b[1], b[2], b[3], b[4], b[5], b[6], depthwise)
            return (bc.flops_per_pixel, bc.params, bc.layers, math.fsum(bc.log_std))
        return self._block(Block(*b))

    def within(self, flops: float, params: float, layers: int) -> bool:
        """All budgets met (the raw-path twin of :meth:`violated`; see :meth:`within_latency`)."""
        lim = self._limits
        return layers <= lim[2] and flops <= lim[0] and params <= lim[1]

    def within_latency(self, blocks: Sequence[RawBlock]) -> bool:
        """The predicted-latency budget met by a mutation's raw blocks (True without a profile or budget)."""
        limit = self.budgets.latency_ms
        return self.latency is None or limit is None or self.latency.ms_raw(blocks) <= limit
