"""A certificate: an upper bound on the best ``entropy-analytic`` score a space holds under its budgets.

The closed-form score is additive over the chain of blocks: block i contributes ``W_i * log-std_i``
(``W_i`` = the sum of the weights of the stages ending at or after it) plus, where it ends a stage,
``w * log(out_i)``; FLOPs and params are sums of per-block figures too. Only the channel chain
(block i's ``in`` is block i-1's ``out``) and the layers budget couple the blocks. So

    max score  s.t.  FLOPs <= F, params <= P, layers <= L

is relaxed by moving FLOPs and params into the objective with multipliers ``lam, mu >= 0``
(Lagrangian relaxation); for fixed multipliers the relaxed problem is solved *exactly* by a dynamic
programme over the blocks whose state is (the previous block's ``out``, the layers used so far). Its
value plus ``lam * F + mu * P`` bounds the best score from above for **every** ``lam, mu >= 0``
(weak duality); the bound reported is the smallest over the multipliers tried (a cutting-plane
search over ``lam``, coordinate steps over ``mu`` when params are budgeted). Each programme solution
that meets the FLOPs and params budgets is a feasible structure (primal recovery): the best of them
is returned with its exact score and costs.

Which structures the bound covers (:func:`relax` says it in words for each space): the block types,
strides and block count of the start structure (no mutation changes them); every ``out`` and
``bottleneck`` value in the closure of the start's channels under the mutation's value operations
(channel multipliers with rounding, ``max_channels``, ``stem_max_out``, the ratio and divisor clamps),
with no pairwise rule between neighbours except ``out >= in`` where the mutation keeps it invariant;
``bottleneck >= min(out / btn_min_divisor, round(out / btn_min_divisor))`` (the lift every block
mutation applies) or the start's value; the kernels the rules offer plus the start's, each also
shrunk as the mutation shrinks it; layers from 1 up to the mutation's cap (or the start's count).
That is a superset of what the evolution's mutation reaches, so no search result can exceed it.
Searches that sample through the Optuna codec (``nsga2``, ``random``) get the codec's ranges instead.
A latency budget is dropped (a relaxation too: the bound stays valid, only looser).

Costs come from :func:`zennas.cost.block_cost` and nothing else. The programme needs each block's
figures on a grid of (in, out, bottleneck) values; rather than millions of calls it reads three 2-D
slices and uses that each figure is a sum of terms in at most two of the three channel counts (true
of every conv-based count), plus one slice for the units after the first. Both properties, and the
concavity in the bottleneck width that the exact bottleneck search relies on, are **checked** against
``block_cost`` when the tables are built; a cost model that breaks them makes the bound unavailable
(or, for concavity, falls back to an exhaustive search) instead of wrong.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from zennas.cost import block_cost, costs
from zennas.errors import SpecError
from zennas.score.analytic import analytic_score
from zennas.space.kinds import BLOCK_KINDS, on_kinds_change
from zennas.space.mutation import smart_round
from zennas.space.space import SearchSpace
from zennas.space.structure import Block, Structure

log = logging.getLogger(__name__)

_COST = getattr(block_cost, "__wrapped__", block_cost)  # uncached: the grid would evict the search's cache
_NEG = -np.inf


# the longest chain the programme runs on: its tables and DP states grow with the number of blocks
# (the shipped spaces have 5-8; a 2,000-block structure would need tens of GB and is refused up front)
MAX_BLOCKS = 32


class BoundUnavailable(SpecError):
    """No certificate can be computed for this search (another score, an unbounded space, a cost
    model the programme cannot decompose)."""


# -- the relaxed space -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Position:
    """One block position of the chain and the values the relaxation allows there."""

    type: str  # block type (fixed: no mutation changes it)
    stride: int  # fixed likewise
    area: float  # input H*W of the block (the FLOPs per pixel are multiplied by it)
    weight: float  # coefficient of the block's log-std in the score
    end_weight: float  # weight of the stage this block ends (its log(out) term), 0 if none
    outs: tuple[int, ...]  # allowed out channels, ascending
    kernels: tuple[int, ...]
    layers: tuple[int, ...]  # allowed unit counts
    btns: tuple[int, ...] | None  # allowed bottleneck widths, ascending (None: the type has none)
    btn_floor: tuple[float, ...] | None  # per out: the smallest allowed bottleneck
    monotone: bool  # out >= in (an invariant of the mutation here)


@dataclass(frozen=True)
class Relaxation:
    in_channels: int
    positions: tuple[Position, ...]
    budget_layers: int | None
    height: int  # input size the FLOPs are counted at
    width: int
    rules: tuple[str, ...]  # what the relaxation allows, in words

    def outside(self, s: Structure) -> str | None:
        """Why ``s`` is outside the relaxed set (the first rule it breaks), or None when it is inside."""
        if len(s.blocks) != len(self.positions) or s.in_channels != self.in_channels:
            return "block count or input channels"
        prev = self.in_channels
        for i, (b, p) in enumerate(zip(s.blocks, self.positions, strict=True)):
            checks = (("type", b.type == p.type), ("stride", b.stride == p.stride), ("in", b.in_channels == prev),
                      ("out", b.out_channels in p.outs), ("kernel", b.kernel in p.kernels),
                      ("layers", b.layers in p.layers), ("in <= out", not p.monotone or b.out_channels >= prev))
            for name, ok in checks:
                if not ok:
                    return f"blocks[{i}].{name}"
            if p.btns is not None:
                assert p.btn_floor is not None
                floor = p.btn_floor[p.outs.index(b.out_channels)]
                if b.bottleneck not in p.btns or b.bottleneck < floor - 1e-9:
                    return f"blocks[{i}].bottleneck"
            prev = b.out_channels
        return None


def channel_closure(space: SearchSpace, start: Structure) -> tuple[int, ...]:
    """Every channel value the mutation can produce from the start's: the start's out/bottleneck
    values closed under the mutation's value operations (multiplier + rounding, clamps, ratios)."""
    r = space.mutation
    base = r.channel_round
    seeds = {b.out_channels for b in start.blocks} | {b.bottleneck for b in start.blocks if b.bottleneck}
    grow = max(1.0, r.out_min_in_ratio or 1.0) ** len(start.blocks)
    cap = int(max(r.max_channels, max(seeds)) * grow)
    vals = set(seeds)
    frontier = list(seeds)
    if r.stem_max_out is not None:
        frontier.append(r.stem_max_out)
        vals.add(r.stem_max_out)
    while frontier:
        v = frontier.pop()
        new = [min(r.max_channels, smart_round(v * m, base)) for m in r.channel_multipliers]
        if r.out_max_in_ratio is not None:
            new.append(int(r.out_max_in_ratio * v))
        if r.out_min_in_ratio is not None:
            new.append(math.ceil(r.out_min_in_ratio * v))
        if r.next_out_divisor is not None:
            new.append(smart_round(v / r.next_out_divisor, base))
        if r.btn_min_divisor is not None:
            new.append(smart_round(v / r.btn_min_divisor, base))
        new.append(int(v * r.btn_max_out_ratio))
        for x in new:
            if 1 <= x <= cap and x not in vals:
                vals.add(x)
                frontier.append(x)
        if len(vals) > 8192:
            raise BoundUnavailable(f"space {space.name!r}: more than 8192 reachable channel values; "
                                   "no certificate", field="space")
    return tuple(sorted(vals))


def _weights_per_block(start: Structure, weights: Sequence[float]) -> tuple[list[float], list[float]]:
    stages = start.stages()
    if len(weights) != len(stages):
        raise BoundUnavailable(f"stage_weights has {len(weights)} entries but the structures have "
                               f"{len(stages)} stages", field="stage_weights")
    per_block = [0.0] * len(start.blocks)
    end_w = [0.0] * len(start.blocks)
    for (_, last), w in zip(stages, weights, strict=True):
        end_w[last] = float(w)
        for i in range(last + 1):
            per_block[i] += float(w)
    return per_block, end_w


def relax(space: SearchSpace, start: Structure, *, budget_layers: int | None, height: int, width: int,
          weights: Sequence[float], sampler: str = "evolution") -> Relaxation:
    """The relaxed space the bound covers (module docstring): per position, the allowed values."""
    blocks = start.blocks
    n = len(blocks)
    per_block, end_w = _weights_per_block(start, weights)
    areas: list[float] = []
    area = float(height * width)
    res_in: list[float] = []
    res = float(min(height, width))
    for b in blocks:
        areas.append(area)
        res_in.append(res)
        area /= b.stride * b.stride
        res /= b.stride
    # the mutation's kernel shrink is planned on the space's start layout at this input size
    plan_res: list[float] = []
    res = float(min(height, width))
    for b in space.start.blocks:
        plan_res.append(res)
        res /= b.stride
    rules: list[str] = [f"block types, strides and block count of the start ({n} blocks) fixed"]
    if sampler == "evolution":
        positions = _mutation_positions(space, start, budget_layers, per_block, end_w, areas, plan_res, rules)
    else:  # the codec decodes onto the space's own start layout
        positions = _codec_positions(space, space.start, budget_layers, per_block, end_w, areas, rules)
    return Relaxation(start.in_channels, tuple(positions), budget_layers, height, width, tuple(rules))


def _shrunk(k: int, res: float, ratio: float) -> int:
    while k > 1 and k * ratio > res:
        k -= 2
    return k


def _layer_cap(space: SearchSpace, i: int, typ: str, n: int, budget_layers: int | None) -> int | None:
    r = space.mutation
    kind = BLOCK_KINDS[typ]
    if i == 1 and r.first_block_max_layers is not None:
        cap: int | None = r.first_block_max_layers
    elif budget_layers is not None and n > 2:
        cap = max(1, budget_layers // kind.convs_per_unit // (n - 2))
    else:
        cap = None
    if kind.max_layers is not None:
        cap = kind.max_layers if cap is None else min(cap, kind.max_layers)
    return cap


def _mutation_positions(space: SearchSpace, start: Structure, budget_layers: int | None, per_block: list[float],
                        end_w: list[float], areas: list[float], plan_res: list[float],
                        rules: list[str]) -> list[Position]:
    r = space.mutation
    blocks = start.blocks
    n = len(blocks)
    n_plan = len(space.start.blocks)  # the Mutator sizes its layer caps on the space's start
    vals = channel_closure(space, start)
    rules.append(f"out/bottleneck values: the {len(vals)} values in the closure of the start's channels under "
                 f"the mutation's multipliers {list(r.channel_multipliers)}, rounding to {r.channel_round}, "
                 f"max_channels {r.max_channels} and the ratio/divisor clamps (min {vals[0]}, max {vals[-1]})")
    # out >= in is kept by every mutation when outs are clamped to >= in (ratio >= 1), to <= the next
    # block's out, and the next-out floor never exceeds the next out; the start must satisfy it
    floor_ok = r.next_out_divisor is None or all(smart_round(v / r.next_out_divisor, r.channel_round) <= v
                                                 for v in vals)
    monotone = (r.out_min_in_ratio is not None and r.out_min_in_ratio >= 1.0 and r.out_max_next and floor_ok
                and all(b.out_channels >= b.in_channels for b in blocks[1:]))
    rules.append("out >= in for every block after the first (an invariant of the mutation here)" if monotone
                 else "no rule between a block's in and out")
    rules.append("no other rule between neighbouring blocks (out <= 4*in, out >= next.out/4 relaxed)")
    frozen_last = r.pick == "reference"
    if frozen_last:
        rules.append("the last block keeps the start's fields (pick: reference never mutates it)")
    lo_div = r.btn_min_divisor
    if lo_div is not None and any(BLOCK_KINDS[b.type].has_bottleneck for b in blocks):
        rules.append(f"bottleneck >= min(out/{lo_div:g}, round(out/{lo_div:g})) or the start's (o, b) pair; "
                     "no upper rule (out can shrink below a bottleneck)")
    max_k = max(r.kernels + tuple(b.kernel for b in space.start.blocks))
    shrink = any(max_k * r.kernel_shrink_ratio > x for x in plan_res)
    caps: list[str] = []
    positions: list[Position] = []
    for i, b in enumerate(blocks):
        kind = BLOCK_KINDS[b.type]
        stem = i == 0 and kind.stem
        fixed = frozen_last and i == n - 1
        fields = () if fixed else (r.stem_fields if stem else r.block_fields)
        if stem and n == 1:
            fields = ()
        # out
        if "out" in fields:
            outs = {v for v in vals if not (stem and r.stem_max_out is not None and v > r.stem_max_out)}
            outs.add(b.out_channels)
        else:
            outs = {b.out_channels}
        # kernels
        ks = {b.kernel} | (set(r.kernels) if "kernel" in fields else set())
        if shrink and i < len(plan_res):
            ks |= {_shrunk(k, plan_res[i], r.kernel_shrink_ratio) for k in ks}
        # layers
        if "layers" in fields and kind.max_layers != 1:
            cap = _layer_cap(space, i, b.type, n_plan, budget_layers)
            if cap is None:
                if budget_layers is None:
                    raise BoundUnavailable(f"space {space.name!r}: block {i}'s unit count is unbounded without a "
                                           "layers budget; give one for a certificate", field="budgets.layers")
                cap = budget_layers // kind.convs_per_unit
            top = max(cap, b.layers)
            layers = tuple(range(1, top + 1))
            caps.append(f"{i}:{top}")
        else:
            layers = (b.layers,)
        # bottleneck
        btns: tuple[int, ...] | None = None
        floor: tuple[float, ...] | None = None
        if kind.has_bottleneck:
            assert b.bottleneck is not None
            if "bottleneck" in fields or "out" in fields:
                btns = tuple(sorted(set(vals) | {b.bottleneck}))
            else:
                btns = (b.bottleneck,)
            fl: list[float] = []
            for o in sorted(outs):
                lo = 0.0 if lo_div is None or len(btns) == 1 else min(o / lo_div, smart_round(o / lo_div, r.channel_round))
                if o == b.out_channels:
                    lo = min(lo, b.bottleneck)
                fl.append(lo)
            floor = tuple(fl)
        positions.append(Position(b.type, b.stride, areas[i], per_block[i], end_w[i], tuple(sorted(outs)),
                                  tuple(sorted(ks)), layers, btns, floor, monotone and i > 0))
    rules.append(f"kernels {sorted(set(r.kernels))} plus the start's" + (", each also as the mutation shrinks it"
                                                                         if shrink else ""))
    rules.append("units per block from 1 to the mutation's cap or the start's count (block:max " +
                 ", ".join(caps) + ")")
    return positions


def _codec_positions(space: SearchSpace, start: Structure, budget_layers: int | None, per_block: list[float],
                     end_w: list[float], areas: list[float], rules: list[str]) -> list[Position]:
    r = space.mutation
    step = r.channel_round
    n = len(start.blocks)
    rules.append("the Optuna codec's ranges (nsga2/random): out and bottleneck any multiple of "
                 f"{step} up to max_channels {r.max_channels} (stem: stem_max_out), kernels {list(r.kernels)}, "
                 "no rule between neighbours")
    positions: list[Position] = []
    for i, b in enumerate(start.blocks):
        hi = r.stem_max_out if (i == 0 and r.stem_max_out) else r.max_channels
        hi = max(step, hi - hi % step)
        outs = tuple(range(step, hi + 1, step))
        if i == 0:
            positions.append(Position(b.type, b.stride, areas[i], per_block[i], end_w[i], outs, (b.kernel,), (1,),
                                      None, None, False))
            continue
        cap = r.first_block_max_layers if i == 1 and r.first_block_max_layers else None
        if cap is None and budget_layers is not None and n > 2:
            cap = max(1, budget_layers // 3 // (n - 2))
        btns = tuple(range(step, r.max_channels + 1, step)) if b.bottleneck is not None else None
        positions.append(Position(b.type, b.stride, areas[i], per_block[i], end_w[i], outs, tuple(sorted(r.kernels)),
                                  tuple(range(1, (cap or 16) + 1)), btns,
                                  tuple(0.0 for _ in outs) if btns else None, False))
    return positions


# -- cost tables from block_cost -------------------------------------------------------------------------
@dataclass
class _Table:
    """Per-pixel FLOPs, params and log-std (last axis) of one (type, stride, kernel) on the grid, as
    ``T(c, o, b, L) = C[c, o] + A[c, b] + B[b, o] + (L - 1) * (Rco[c, o] + Rbo[b, o])``."""

    C: np.ndarray  # (nc, no, 3)
    A: np.ndarray  # (nc, nb, 3)
    B: np.ndarray  # (nb, no, 3)
    Rco: np.ndarray  # (nc, no, 3)
    Rbo: np.ndarray  # (nb, no, 3)
    layers: dict[int, int]  # units -> main-path layers
    concave: bool  # the bottleneck search may bisect


def _figs(typ: str, c: int, o: int, s: int, k: int, units: int, b: int | None) -> tuple[float, float, float]:
    bc = _COST(Block(typ, c, o, s, k, units, b))
    return bc.flops_per_pixel, bc.params, math.fsum(bc.log_std)


def _grid(typ: str, s: int, k: int, units: int, cs: Sequence[int], os_: Sequence[int],
          bs: Sequence[int | None], keep: Any = None) -> np.ndarray:
    """block_cost's figures on the grid cs x os_ x bs (skipping (c, o) pairs ``keep`` rejects: zeros)."""
    rows: list[tuple[float, float, float]] = []
    zero = (0.0, 0.0, 0.0)
    cost, fsum = _COST, math.fsum
    for c in cs:
        for o in os_:
            if keep is not None and not keep(c, o):
                rows.extend([zero] * len(bs))
                continue
            for b in bs:
                bc = cost(Block(typ, c, o, s, k, units, b))
                rows.append((bc.flops_per_pixel, bc.params, fsum(bc.log_std)))
    return np.asarray(rows, dtype=float).reshape(len(cs), len(os_), len(bs), 3)


@lru_cache(maxsize=24)
def _ob_slices(typ: str, s: int, k: int, c0: int, os_: tuple[int, ...],
               bs: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """T1(c0, o, b) and T2(c0, o, b): shared by every position with this type, stride and kernel."""
    return _grid(typ, s, k, 1, [c0], os_, bs)[0], _grid(typ, s, k, 2, [c0], os_, bs)[0]


def _ascending(c: int, o: int) -> bool:
    return o >= c


@lru_cache(maxsize=24)
def _slices(typ: str, s: int, k: int, cs: tuple[int, ...], os_: tuple[int, ...], bs: tuple[int, ...] | None,
            monotone: bool) -> tuple[np.ndarray, ...]:
    """The 2-D slices of block_cost the tables are assembled from (independent of the unit counts)."""
    c0, o0 = cs[0], os_[0]
    keep = _ascending if monotone else None  # pairs with out < in are never used there
    if bs is None:
        one = _grid(typ, s, k, 1, cs, os_, [None], keep)[:, :, 0]
        two = _grid(typ, s, k, 2, cs, os_, [None], keep)[:, :, 0]
        return one, two
    s_co = _grid(typ, s, k, 1, cs, os_, [bs[0]], keep)[:, :, 0]  # T1(c, o, b0)
    s_cb = _grid(typ, s, k, 1, cs, [o0], bs)[:, 0, :]  # T1(c, o0, b)
    s_ob, s2_ob = _ob_slices(typ, s, k, c0, os_, bs)  # T1(c0, o, b), T2(c0, o, b): (no, nb, 3)
    return s_co, s_cb, s_ob, s2_ob


def _table(typ: str, s: int, k: int, cs: tuple[int, ...], os_: tuple[int, ...], bs: tuple[int, ...] | None,
           units: tuple[int, ...], monotone: bool) -> _Table:
    c0, o0 = cs[0], os_[0]
    sl = _slices(typ, s, k, cs, os_, bs, monotone)
    if bs is None:
        one, two = sl
        zeros_b = np.zeros((1, len(os_), 3))
        t = _Table(one, np.zeros((len(cs), 1, 3)), zeros_b, two - one, zeros_b, {}, True)
        b0: int | None = None
    else:
        b0 = bs[0]
        s_co, s_cb, s_ob, s2_ob = sl
        A = s_cb - s_cb[:, :1]
        B = (s_ob - s_ob[:, :1] - s_cb[:1, :] + s_cb[:1, :1]).transpose(1, 0, 2)
        R = (s2_ob - s_ob).transpose(1, 0, 2)
        t = _Table(s_co, A, B, np.zeros((len(cs), len(os_), 3)), R, {}, _concave(A, B, R, bs))
    t.layers = {u: _COST(Block(typ, c0, o0, s, k, u, b0)).layers for u in units}
    _verify(t, typ, s, k, cs, os_, bs, units, _ascending if monotone else None)
    return t


def _concave(A: np.ndarray, B: np.ndarray, R: np.ndarray, bs: Sequence[int]) -> bool:
    """log-std concave and FLOPs/params convex along the bottleneck axis (each slice), so the
    Lagrangian is concave in the bottleneck width and its maximum can be bisected."""
    if len(bs) < 3:
        return True
    db = np.diff(np.asarray(bs, dtype=float))

    def ok(x: np.ndarray, axis: int) -> bool:
        shape = [1, 1, 1]
        shape[axis] = -1
        slope = np.diff(x, axis=axis) / db.reshape(shape)
        dd = np.diff(slope, axis=axis)
        tol = 1e-9 * (np.abs(slope).max(initial=0.0) + 1.0)
        return bool((dd[..., :2] >= -tol).all() and (dd[..., 2] <= tol).all())

    return ok(A, 1) and ok(B, 0) and ok(R, 0)


def _verify(t: _Table, typ: str, s: int, k: int, cs: Sequence[int], os_: Sequence[int],
            bs: Sequence[int] | None, units: Sequence[int], keep: Any) -> None:
    """Spot-check the decomposition against block_cost itself (random points, diagonals, extremes)."""
    rng = np.random.default_rng(12345)
    pts: list[tuple[int, int, int, int]] = []
    nb = len(bs) if bs else 1
    for _ in range(128):
        pts.append((int(rng.integers(len(cs))), int(rng.integers(len(os_))), int(rng.integers(nb)),
                    int(rng.choice(units))))
    pts += [(len(cs) - 1, len(os_) - 1, nb - 1, max(units)), (0, 0, 0, min(units))]
    common = sorted(set(cs) & set(os_))  # in == out (a residual type may change there)
    for v in common[:: max(1, len(common) // 8)]:
        bi = bs.index(v) if bs and v in bs else int(rng.integers(nb))
        pts.append((cs.index(v), os_.index(v), bi, int(rng.choice(units))))
    if bs:
        for v in sorted(set(bs) & set(os_))[:: max(1, len(bs) // 8)]:
            pts.append((int(rng.integers(len(cs))), os_.index(v), bs.index(v), int(rng.choice(units))))
    for ci, oi, bi, u in pts:
        if keep is not None and not keep(cs[ci], os_[oi]):
            continue
        want = _COST(Block(typ, cs[ci], os_[oi], s, k, u, bs[bi] if bs else None))
        have = (t.C[ci, oi] + t.A[ci, bi] + t.B[bi, oi] + (u - 1) * (t.Rco[ci, oi] + t.Rbo[bi, oi]))
        exp = (want.flops_per_pixel, want.params, math.fsum(want.log_std))
        for q in range(3):
            if abs(have[q] - exp[q]) > 1e-9 * max(1.0, abs(exp[q])):
                raise BoundUnavailable(
                    f"the cost model of {typ} is not additive in pairs of its channel counts and linear in its "
                    f"units (at in={cs[ci]}, out={os_[oi]}, bottleneck={bs[bi] if bs else None}, units={u}); "
                    "no certificate", field="score")
        if want.layers != t.layers[u]:
            raise BoundUnavailable(f"the layer count of {typ} depends on its channels; no certificate", field="score")


# -- the programme ---------------------------------------------------------------------------------------
@dataclass
class _Solution:
    value: float  # the Lagrangian's maximum (without the multipliers' constant)
    structure: Structure
    score: float
    flops: float
    params: float


class _Programme:
    def __init__(self, rel: Relaxation) -> None:
        self.rel = rel
        self.tables: list[dict[int, _Table]] = []
        prev: tuple[int, ...] = (rel.in_channels,)
        for p in rel.positions:
            self.tables.append({k: _table(p.type, p.stride, k, prev, p.outs, p.btns, p.layers, p.monotone)
                                for k in p.kernels})
            prev = p.outs
        self.evaluations = 0

    def solve(self, lam: float, mu: float) -> _Solution:
        """The relaxed problem's exact maximum of score - lam*FLOPs - mu*params, and its argmax."""
        self.evaluations += 1
        rel = self.rel
        budget = rel.budget_layers
        ustates: list[int] = [0]
        V = np.zeros((1, 1))  # (layer states, previous out)
        prev_outs: tuple[int, ...] = (rel.in_channels,)
        trace: list[tuple[Any, ...]] = []
        for p, tables in zip(rel.positions, self.tables, strict=True):
            G, gk, gb = self._block_values(p, tables, prev_outs, lam, mu)  # (nL, nc, no)
            new_states: dict[int, int] = {}
            rows: list[np.ndarray] = []
            choice: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per new state: (L idx, prev state, c)
            for li, units in enumerate(p.layers):
                used = next(iter(tables.values())).layers[units] if budget is not None else 0
                tot = V[:, :, None] + G[li][None, :, :]  # (nu, nc, no)
                best_c = tot.argmax(axis=1)  # (nu, no)
                best = np.take_along_axis(tot, best_c[:, None, :], axis=1)[:, 0, :]
                for j, u in enumerate(ustates):
                    if budget is not None and u + used > budget:
                        continue
                    slot = new_states.get(u + used)
                    if slot is None:
                        slot = new_states[u + used] = len(rows)
                        rows.append(np.full(len(p.outs), _NEG))
                        choice.append((np.full(len(p.outs), -1), np.full(len(p.outs), -1),
                                       np.full(len(p.outs), -1)))
                    better = best[j] > rows[slot]
                    rows[slot] = np.where(better, best[j], rows[slot])
                    cl, cj, cc = choice[slot]
                    cl[better], cj[better], cc[better] = li, j, best_c[j][better]
            if not rows:
                raise BoundUnavailable("no structure of the relaxed space meets the layers budget",
                                       field="budgets.layers")
            ustates = list(new_states)
            V = np.stack(rows)
            trace.append((p, prev_outs, choice, gk, gb))
            prev_outs = p.outs
        flat = int(np.argmax(V))
        t, oi = flat // V.shape[1], flat % V.shape[1]  # (layer state, out) of the maximum
        value = float(V[t, oi])
        if not math.isfinite(value):
            raise BoundUnavailable("no structure of the relaxed space meets the layers budget", field="budgets.layers")
        blocks: list[Block] = []
        for p, pouts, choice, gk, gb in reversed(trace):
            cl, cj, cc = choice[t]
            li, j, ci = int(cl[oi]), int(cj[oi]), int(cc[oi])
            k = p.kernels[int(gk[li][ci, oi])]
            b = p.btns[int(gb[li][ci, oi])] if p.btns is not None else None
            blocks.append(Block(p.type, pouts[ci], p.outs[oi], p.stride, k, p.layers[li], b))
            t, oi = j, ci
        s = Structure(tuple(reversed(blocks)))
        c = costs_at(s, rel)
        return _Solution(value, s, c[2], c[0], c[1])

    def _block_values(self, p: Position, tables: dict[int, _Table], prev_outs: tuple[int, ...], lam: float,
                      mu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """G[L, c, o]: the best Lagrangian value of this block over kernels and bottlenecks; argmaxes."""
        coef = np.array([-lam * p.area, -mu, p.weight])
        nc, no, nl = len(prev_outs), len(p.outs), len(p.layers)
        end = p.end_weight * np.log(np.asarray(p.outs, dtype=float))[None, :]
        valid = np.ones((nc, no), dtype=bool)
        if p.monotone:
            valid = np.asarray(p.outs)[None, :] >= np.asarray(prev_outs)[:, None]
        extra = np.asarray(p.layers, dtype=float)[:, None, None] - 1.0  # units after the first
        G = np.full((nl, nc, no), _NEG)
        gk = np.zeros((nl, nc, no), dtype=np.int64)
        gb = np.zeros((nl, nc, no), dtype=np.int64)
        lo_idx = None
        if p.btns is not None:
            assert p.btn_floor is not None
            lo_idx = np.searchsorted(np.asarray(p.btns, dtype=float), np.asarray(p.btn_floor) - 1e-9)
            valid &= (lo_idx < len(p.btns))[None, :]
        pc, po = np.nonzero(valid)
        for ki, k in enumerate(p.kernels):
            t = tables[k]
            H = (t.C @ coef + end)[None] + extra * (t.Rco @ coef)[None]  # (nL, nc, no)
            val = np.full((nl, nc, no), _NEG)
            bi = np.zeros((nl, nc, no), dtype=np.int64)
            if lo_idx is None:
                val[:, pc, po] = H[:, pc, po]
            else:
                HB = (t.B @ coef)[None] + extra * (t.Rbo @ coef)[None]  # (nL, nb, no)
                inner, arg = _max_over_b(t.A @ coef, HB, lo_idx, pc, po, t.concave)
                val[:, pc, po] = H[:, pc, po] + inner
                bi[:, pc, po] = arg
            better = val > G
            G = np.where(better, val, G)
            gk[better] = ki
            gb[better] = bi[better]
        return G, gk, gb


def _max_over_b(HA: np.ndarray, HB: np.ndarray, lo_idx: np.ndarray, pc: np.ndarray, po: np.ndarray,
                concave: bool) -> tuple[np.ndarray, np.ndarray]:
    """max over b >= floor(o) of HA[c, b] + HB[L, b, o], for every L and (c, o) pair: bisection on the
    discrete derivative when the function is concave in b (checked at table build), else exhaustive.
    Returns (nL, npairs) values and argmaxes."""
    nb = HA.shape[1]
    nl, _, no = HB.shape
    if concave:
        HAf, HBf = HA.ravel(), HB.ravel()
        rowa = pc * nb  # (np,)
        rowb = (np.arange(nl) * (nb * no))[:, None] + po[None, :]  # (nL, np)
        lo = np.broadcast_to(lo_idx[po], rowb.shape).astype(np.int64)
        hi = np.full_like(lo, nb - 1)
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) >> 1
            nxt = np.minimum(mid + 1, nb - 1)
            right = active & (HAf[rowa + nxt] + HBf[rowb + nxt * no] > HAf[rowa + mid] + HBf[rowb + mid * no])
            lo = np.where(right, mid + 1, lo)
            hi = np.where(active & ~right, mid, hi)
        return HAf[rowa + lo] + HBf[rowb + lo * no], lo
    below = np.arange(nb)[:, None] < lo_idx[None, :]  # (nb, no)
    out = np.empty((nl, pc.size))
    arg = np.empty((nl, pc.size), dtype=np.int64)
    for li in range(nl):
        HBm = np.where(below, _NEG, HB[li])
        for c in np.unique(pc):
            sel = pc == c
            tot = HA[c][:, None] + HBm[:, po[sel]]  # (nb, pairs of this c)
            a = tot.argmax(axis=0)
            out[li, sel] = tot[a, np.arange(a.size)]
            arg[li, sel] = a
    return out, arg


def costs_at(s: Structure, rel: Relaxation) -> tuple[float, float, float]:
    """(FLOPs, params, score) of a structure at the relaxation's input size and weights."""
    c = costs(s, rel.height, rel.width)
    return c.flops, c.params, _score(s, rel)


def _score(s: Structure, rel: Relaxation) -> float:
    weights = [rel.positions[last].end_weight for _, last in s.stages()]
    return analytic_score(s, weights)


# -- the dual ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoundResult:
    bound: float  # no structure of the relaxed space under the budgets scores more
    structure: Structure | None  # the best feasible structure the programme found
    score: float | None  # its entropy-analytic score
    flops: float | None
    params: float | None
    layers: int | None
    multipliers: dict[str, float] = field(default_factory=dict)  # the multipliers of the bound
    evaluations: int = 0  # programme solves
    seconds: float = 0.0
    relaxation: tuple[str, ...] = ()
    exact: bool = False  # the bound is attained by a feasible structure (dual gap 0)

    def gap_pct(self, best: float) -> float:
        """How far ``best`` is below the bound, in percent of the bound."""
        return 100.0 * (self.bound - best) / abs(self.bound) if self.bound else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"bound": self.bound, "structure": self.structure.to_dict() if self.structure else None,
                "score": self.score, "flops": self.flops, "params": self.params, "layers": self.layers,
                "multipliers": dict(self.multipliers), "evaluations": self.evaluations, "seconds": self.seconds,
                "relaxation": list(self.relaxation), "exact": self.exact}


class _Dual:
    def __init__(self, prog: _Programme, flops: float | None, params: float | None, rtol: float) -> None:
        self.prog, self.F, self.P, self.rtol = prog, flops, params, rtol
        self.best_bound = math.inf
        self.best_mult = (0.0, 0.0)
        self.primal: _Solution | None = None

    def d(self, lam: float, mu: float) -> _Solution:
        sol = self.prog.solve(lam, mu)
        val = sol.value + lam * (self.F or 0.0) + mu * (self.P or 0.0)
        if val < self.best_bound:
            self.best_bound, self.best_mult = val, (lam, mu)
        if (self.F is None or sol.flops <= self.F) and (self.P is None or sol.params <= self.P):
            if self.primal is None or sol.score > self.primal.score:
                self.primal = sol
        return sol

    def line(self, sol: _Solution, lam: float, mu: float) -> float:
        return (sol.score + lam * ((self.F or 0.0) - sol.flops) + mu * ((self.P or 0.0) - sol.params))

    def min_lambda(self, mu: float, lam_hint: float | None = None, max_iter: int = 40) -> float:
        """Minimize d(., mu) over lam >= 0 (convex, piecewise linear): cutting planes from a bracket."""
        sol0 = self.d(0.0, mu)
        if self.F is None or sol0.flops <= self.F:
            return 0.0
        # a first guess at the price of a FLOP: the unconstrained optimum's score per FLOP of the budget
        lam = lam_hint or max(abs(sol0.score), 1.0) / self.F * 0.1
        lo_sol, lo_lam = sol0, 0.0
        hi_sol = None
        for _ in range(60):  # a bracket within a factor 2: the price is halved or doubled until it flips
            s = self.d(lam, mu)
            if s.flops <= self.F:
                hi_sol = s
                if lo_sol is not sol0:
                    break
                lam *= 0.5
            else:
                lo_sol, lo_lam = s, lam
                if hi_sol is not None:
                    break
                lam *= 2.0
        if hi_sol is None:
            return lo_lam
        lam_star = lam
        for _ in range(max_iter):
            denom = lo_sol.flops - hi_sol.flops
            if denom <= 0:
                break
            lam_star = (self.line(lo_sol, 0.0, mu) - self.line(hi_sol, 0.0, mu)) / denom
            s = self.d(lam_star, mu)
            here = s.value + lam_star * self.F + mu * (self.P or 0.0)
            floor = self.line(lo_sol, lam_star, mu)  # min over lam of d(., mu) is >= this (both lines)
            log.debug("lam %.6g: d %.6f, floor %.6f, flops %.4g", lam_star, here, floor, s.flops)
            if here - floor <= self.rtol * max(1.0, abs(here)):
                break  # within rtol of the best multiplier (0: the two lines meet at the minimum)
            if s.flops > self.F:
                lo_sol = s
            else:
                hi_sol = s
        return lam_star


def bound(space: SearchSpace, *, start: Structure | None = None, budget_flops: float | None = None,
          budget_params: float | None = None, budget_layers: int | None = None, height: int = 480,
          width: int | None = None, weights: Sequence[float] | None = None,
          sampler: str = "evolution", rtol: float = 1e-5) -> BoundResult:
    """The certificate: an upper bound on the best entropy-analytic score of ``space`` under the budgets,
    with the best feasible structure the programme found (module docstring). The multiplier search
    stops once the bound is provably within ``rtol`` (relative) of the best the relaxation allows."""
    t0 = time.perf_counter()
    width = height if width is None else width
    start = start or space.start
    weights = tuple(space.stage_weights if weights is None else weights)
    if budget_flops is None and budget_params is None and budget_layers is None:
        raise BoundUnavailable("a certificate needs at least one of the FLOPs, params or layers budgets",
                               field="budgets")
    if len(start.blocks) > MAX_BLOCKS:  # refused before any table is built: its memory grows with the chain
        raise BoundUnavailable(f"the certificate's programme is sized for chains of at most {MAX_BLOCKS} blocks; "
                               f"this start has {len(start.blocks)}", field="start")
    rel = relax(space, start, budget_layers=budget_layers, height=height, width=width, weights=weights,
                sampler=sampler)
    prog = _Programme(rel)
    dual = _Dual(prog, budget_flops, budget_params, rtol)
    if budget_params is None:
        dual.min_lambda(0.0)
    else:
        _coordinate(dual)
    p = dual.primal
    lam, mu = dual.best_mult
    exact = p is not None and abs(dual.best_bound - p.score) <= 1e-9 * max(1.0, abs(p.score))
    res = BoundResult(
        bound=dual.best_bound, structure=p.structure if p else None, score=p.score if p else None,
        flops=p.flops if p else None, params=p.params if p else None,
        layers=costs(p.structure, height, width).layers if p else None,
        multipliers={"flops": lam, "params": mu}, evaluations=prog.evaluations,
        seconds=time.perf_counter() - t0, relaxation=rel.rules, exact=exact)
    log.info("bound %.4f (feasible %.4f) after %d solves in %.2f s", res.bound, res.score or float("nan"),
             res.evaluations, res.seconds)
    return res


def _coordinate(dual: _Dual, rounds: int = 6) -> None:
    """Params budgeted too: alternate 1-D minimizations over lam and mu (any pair gives a valid bound)."""
    assert dual.P is not None
    mu = 0.0
    lam = dual.min_lambda(mu)
    for _ in range(rounds):
        # minimize over mu with lam fixed: the same cutting planes on the params line
        s0 = dual.d(lam, mu)
        if s0.params <= dual.P and mu == 0.0:
            return
        lo_mu, hi_mu = 0.0, max(mu, max(abs(s0.score), 1.0) / dual.P * 1e-3)
        for _ in range(60):
            if dual.d(lam, hi_mu).params <= dual.P:
                break
            lo_mu, hi_mu = hi_mu, hi_mu * 4.0
        for _ in range(24):  # bisection on the sign of the subgradient P - params(x)
            mid = 0.5 * (lo_mu + hi_mu)
            if dual.d(lam, mid).params > dual.P:
                lo_mu = mid
            else:
                hi_mu = mid
        mu_new = dual.best_mult[1]
        lam_new = dual.min_lambda(mu_new, lam_hint=lam or None)
        if abs(mu_new - mu) <= 1e-12 and abs(lam_new - lam) <= 1e-12:
            break
        lam, mu = lam_new, mu_new


# -- a search's certificate --------------------------------------------------------------------------
def certificate(space: SearchSpace, start: Structure, *, budgets: Any, height: int, width: int,
                weights: Sequence[float], sampler: str, best_score: float | None) -> dict[str, Any]:
    """The certificate a finished entropy-analytic search reports: the bound, the gap of ``best_score``
    below it, and the programme's best feasible structure (``better`` when it beats ``best_score``).
    ``{"available": False, "reason": ...}`` when no bound can be computed."""
    try:
        res = _cached_bound(space, start, budgets.flops, budgets.params, budgets.layers, height, width,
                            tuple(float(w) for w in weights), sampler)
    except BoundUnavailable as e:
        return {"available": False, "reason": e.message}
    best = best_score if best_score is not None and math.isfinite(best_score) else None
    better = res.score is not None and (best is None or res.score > best)
    top = max(x for x in (best, res.score) if x is not None) if (best is not None or res.score is not None) else None
    out = {"available": True, "bound": res.bound, "gap_pct": res.gap_pct(top) if top is not None else None,
           "search_best": best, "better": better, **{k: v for k, v in res.to_dict().items() if k != "bound"}}
    if budgets.latency_ms is not None:
        out["relaxation"] = [*out["relaxation"], "the latency budget is dropped (the bound ignores it)"]
    return out


@lru_cache(maxsize=32)
def _cached_bound(space: SearchSpace, start: Structure, flops: float | None, params: float | None,
                  layers: int | None, height: int, width: int, weights: tuple[float, ...],
                  sampler: str) -> BoundResult:
    """Searches of one space under the same budgets (a service's repeated requests, a test suite) share
    their certificate: it is a pure function of these arguments."""
    return bound(space, start=start, budget_flops=flops, budget_params=params, budget_layers=layers,
                 height=height, width=width, weights=weights, sampler=sampler)


# keyed by block type names: a kind that comes or goes drops them
on_kinds_change(_ob_slices.cache_clear)
on_kinds_change(_slices.cache_clear)
on_kinds_change(_cached_bound.cache_clear)
