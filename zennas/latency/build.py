"""Building a profile: plan the tables a space needs at one input size, time every cell, fit the
per-network overhead.

1. **Plan.** Every op key a structure of the space can produce at this input size is enumerated
   from the space's rules (each block position's allowed types, kernels after the shrink rule, both
   shortcut kinds), so a search never meets an op the profile lacks. The channel range of each
   (kind, feature-map size) is taken from ``plan_samples`` random-walk structures under the FLOPs
   bound; each axis's grid is the points of a geometric ladder (8, 8r, 8r^2, ... up to the space's
   ``max_channels``) that bracket that range.
2. **Measure.** Each cell is timed in the runtime (median, p10, p90 of its runs), in rounds over
   groups of cells whose sessions are held at once, one anchor cell timed in every group and each
   group scaled to the anchor's first timing (:mod:`zennas.latency.interleave`: a shared machine's
   speed drifts by tens of percent over minutes, which cells timed one after another would keep). A cell whose op
   alone would exceed ``op_flops_cap`` MACs is not timed (it could not fit in any structure under
   the budget, and it would dominate the build time): it is estimated from the nearest measured cell
   of its table, scaled by FLOPs, and recorded with ``runs = 0``.
3. **Fit.** ``calibration`` random-walk structures are timed whole (in rounds) and the network fit
   (:mod:`zennas.latency.fit`: scale, per-op and fixed costs, a memory term where it earns its place)
   relates them to the sums of their ops.

The partial profile is saved (atomically) as the build goes, so ``resume`` continues it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from zennas.errors import SpecError
from zennas.latency.fit import fit_network
from zennas.latency.interleave import GROUP_BYTES
from zennas.latency.ops import AXES, Op, TableKey, block_ops, ladder, out_size, structure_ops
from zennas.latency.profile import Fingerprint, OpTable, Overhead, Profile, ProfileError, space_digest
from zennas.latency.sample import default_max_flops, sample_structures
from zennas.space.kinds import BLOCK_KINDS
from zennas.space.mutation import Mutator
from zennas.space.space import SearchSpace, get_space, space_from_dict
from zennas.space.structure import Block, Structure

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BuildSpec:
    runtime: str = "onnxruntime"  # onnxruntime | torch
    threads: int = 1  # intra-op threads
    batch: int = 1
    height: int = 480  # network input size
    width: int = 480
    space: str = "detection-k1kxk1"  # shipped space name (or the name of space_doc)
    space_doc: Mapping[str, Any] | None = None  # an inline space document instead of a shipped one
    grid_ratio: float = 2.0  # ratio between neighbouring channel grid points
    plan_samples: int = 2000  # random-walk structures that size the channel ranges
    calibration: int = 16  # whole networks timed to fit the per-network overhead (and profiled, below)
    in_network: bool = False  # onnxruntime: per-table in-network ratios from its profiler (zennas.latency.innetwork)
    seed: int = 0
    max_flops: float | None = None  # FLOPs bound of the sampled structures (None: the space's budget, scaled)
    op_flops_cap: float | None = None  # MACs above which a cell is estimated, not timed (None: max_flops / 4)
    warmup: int = 2  # per op cell: untimed calls
    min_runs: int = 5  # per op cell: timed calls, at least
    max_runs: int = 50  # per op cell: timed calls, at most
    min_time_s: float = 0.1  # per op cell: keep timing up to max_runs until this much time is spent
    network_runs: int = 5  # per calibration network: timed calls (after one warm-up)
    clock: str = "wall"  # wall | cpu (this thread's CPU time: for a shared, loaded build machine; 1 thread)
    opset: int | None = None  # ONNX opset (None: export-onnx's default)
    group_bytes: int = GROUP_BYTES  # sessions held at once while timing in rounds (zennas.latency.interleave)
    group_cells: int = 64  # cells per group of rounds (more: drift shared wider; fewer: saved more often)
    extra: Mapping[str, Any] = field(default_factory=dict)  # recorded as given (e.g. the Ray resource label)

    def __post_init__(self) -> None:
        for f in ("threads", "batch", "height", "width", "max_runs", "min_runs", "network_runs", "group_bytes",
                  "group_cells"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"{f} must be a positive integer, got {v!r}", field=f)
        for f in ("plan_samples", "calibration", "warmup", "seed"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SpecError(f"{f} must be a non-negative integer, got {v!r}", field=f)
        if self.calibration < 2:
            raise SpecError(f"calibration must be >= 2 (two networks fit scale and offset), got {self.calibration}",
                            field="calibration")
        if not (isinstance(self.grid_ratio, (int, float)) and 1.0 < self.grid_ratio <= 8.0):
            raise SpecError(f"grid_ratio must be in (1, 8], got {self.grid_ratio!r}", field="grid_ratio")
        from zennas.latency.runtimes import CLOCKS

        if self.clock not in CLOCKS:
            raise SpecError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}", field="clock")
        if self.clock == "cpu" and self.threads != 1:
            raise SpecError("clock 'cpu' times one thread's CPU time: it needs threads = 1", field="clock")
        for f in ("max_flops", "op_flops_cap"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise SpecError(f"{f} must be a positive number, got {v!r}", field=f)

    def resolve_space(self) -> SearchSpace:
        if self.space_doc is not None:
            return space_from_dict(self.space_doc, source="space_doc")
        return get_space(self.space)

    def settings(self, space: SearchSpace) -> dict[str, Any]:
        """What the profile records of how it was built (and what a resumed build must match)."""
        mf = self.max_flops if self.max_flops is not None else default_max_flops(space, self.height, self.width)
        return {"grid_ratio": float(self.grid_ratio), "plan_samples": self.plan_samples,
                "calibration": self.calibration, "seed": self.seed, "max_flops": mf,
                "op_flops_cap": self.op_flops_cap if self.op_flops_cap is not None else (mf / 4 if mf else None),
                "warmup": self.warmup, "min_runs": self.min_runs, "max_runs": self.max_runs,
                "min_time_s": float(self.min_time_s), "network_runs": self.network_runs, "clock": self.clock,
                "flush_denormal": True, "timing": "rounds",
                "in_network": bool(self.in_network and self.runtime == "onnxruntime"), **dict(self.extra)}


# -- 1. plan ---------------------------------------------------------------------------------------
def _position_keys(space: SearchSpace, height: int, width: int) -> set[TableKey]:
    """Every op key a structure of ``space`` can produce at ``height x width``."""
    mut = Mutator(space, budget_layers=space.budgets.layers, height=height, width=width)
    r = space.mutation
    keys: set[TableKey] = set()
    h, w = height, width
    for i, b in enumerate(space.start.blocks):
        types = space.block_types.first if i == 0 else space.block_types.rest
        for typ in types:
            kind = BLOCK_KINDS[typ]
            fields = r.stem_fields if kind.stem else r.block_fields
            kernels = {b.kernel} | (set(r.kernels) if "kernel" in fields else set())
            stride = kind.fixed_stride or b.stride
            # the mutator's shrink rule at this position (a kernel larger than the map shrinks); the
            # start's own kernel stands unshrunk in the start itself
            kernels |= {mut._shrink(Block(typ, 16, 32, stride, k, 2, 16), i).kernel for k in kernels}
            for k in sorted(kernels):
                btn = 16 if kind.has_bottleneck else None
                layers = 1 if kind.max_layers == 1 else 2
                for cin, out in ((16, 32), (32, 32)):  # both shortcut kinds
                    cin = b.in_channels if i == 0 else cin
                    for op in block_ops(Block(typ, cin, out, stride, k, layers, btn), h, w):
                        keys.add(op.key)
        h, w = out_size(h, b.stride), out_size(w, b.stride)
    return keys


def plan_tables(space: SearchSpace, spec: BuildSpec) -> list[OpTable]:
    """Empty tables (cells ``None``) covering the space at the spec's input size."""
    h, w = spec.height, spec.width
    mf = spec.settings(space)["max_flops"]
    samples = [space.start, *sample_structures(space, spec.plan_samples, seed=spec.seed, height=h, width=w,
                                               max_flops=mf)]
    lo: dict[tuple[str, int, int, int], int] = {}
    hi: dict[tuple[str, int, int, int], int] = {}
    for s in samples:
        for op in structure_ops(s, h, w):
            for j, c in enumerate(op.point):
                rk = (op.key.kind, op.key.height, op.key.width, j)
                lo[rk] = min(lo.get(rk, c), c)
                hi[rk] = max(hi.get(rk, c), c)
    steps = ladder(8, space.mutation.max_channels, spec.grid_ratio)
    tables = []
    for key in sorted(_position_keys(space, h, w)):
        axes = []
        for j in range(len(AXES[key.kind])):
            rk = (key.kind, key.height, key.width, j)
            if rk in lo:
                a, b = lo[rk], hi[rk]
            else:  # never sampled at this size: the kind's range at any size
                same = [(lo[x], hi[x]) for x in lo if x[0] == key.kind and x[3] == j]
                a = min((x[0] for x in same), default=8)
                b = max((x[1] for x in same), default=space.mutation.max_channels)
            below = [v for v in steps if v <= a] or [steps[0]]
            above = [v for v in steps if v >= b] or [steps[-1]]
            pts = [v for v in steps if below[-1] <= v <= above[0]]
            if len(pts) < 2:
                pts = [pts[0], next((v for v in steps if v > pts[0]), pts[0] * 2)]
            axes.append(tuple(pts))
        n = math.prod(len(a) for a in axes)
        tables.append(OpTable(key, tuple(axes), (None,) * n, (None,) * n, (None,) * n, (0,) * n))
    return tables


# -- 2./3. measure and fit --------------------------------------------------------------------------
def _op(key: TableKey, point: tuple[int, ...]) -> Op:
    return Op(key, point)


def _label(op: Op) -> str:
    return f"{op.key.label()} {'x'.join(map(str, op.point))}"


def _over_cap(op: Op, ci: int, cap: float | None, batch: int) -> bool:
    """A cell too big to time (estimated from its neighbours instead); a table's smallest cell is always timed."""
    return cap is not None and ci != 0 and op.flops(batch) > cap


def _anchor_cell(tables: list[OpTable], cap: float | None, batch: int) -> tuple[int, int]:
    """The drift anchor of the cells: the timed cell of median FLOPs (fixed by the plan, so a resumed
    build times the same one)."""
    cands = sorted((op.flops(batch), ti, ci) for ti, t in enumerate(tables) for ci, c in enumerate(t.cells())
                   if not _over_cap(op := _op(t.key, c), ci, cap, batch))
    _, ti, ci = cands[len(cands) // 2]
    return ti, ci


def _fill_estimates(t: OpTable, batch: int) -> OpTable:
    """Cells left empty (over the FLOPs cap): the nearest measured cell scaled by FLOPs (runs stays 0)."""
    import numpy as np

    cells = t.cells()
    measured = [i for i, r in enumerate(t.runs) if r > 0]
    if not measured:
        raise ProfileError(f"table {t.key.label()!r} has no measured cell", field="tables")
    med, p10, p90 = list(t.median_ms), list(t.p10_ms), list(t.p90_ms)
    logs = np.log(np.asarray(cells, dtype=float))
    for i, v in enumerate(t.median_ms):
        if v is not None:
            continue
        j = min(measured, key=lambda m: float(np.sum((logs[m] - logs[i]) ** 2)))
        ratio = _op(t.key, cells[i]).flops(batch) / _op(t.key, cells[j]).flops(batch)
        med[i], p10[i], p90[i] = med[j] * ratio, p10[j] * ratio, p90[j] * ratio  # type: ignore[operator]
    return replace(t, median_ms=tuple(med), p10_ms=tuple(p10), p90_ms=tuple(p90))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def build_profile(spec: BuildSpec, *, resume: Profile | None = None, save: Callable[[Profile], None] | None = None,
                  progress: Progress | None = None, save_every_s: float = 10.0) -> Profile:
    """Build (or, with ``resume``, finish) a profile on this machine."""
    from zennas.latency.interleave import Drifted, op_bytes, structure_bytes, time_grouped
    from zennas.latency.predict import Predictor
    from zennas.latency.profile import local_fingerprint
    from zennas.latency.runtimes import Runner, TimingSettings

    t_start = time.perf_counter()
    space = spec.resolve_space()
    runner = Runner(spec.runtime, threads=spec.threads, batch=spec.batch, opset=spec.opset)
    fp = local_fingerprint(spec.runtime, runner.version())
    settings = spec.settings(space)
    digest = space_digest(space.to_dict())
    op_timing = TimingSettings(spec.warmup, spec.min_runs, spec.max_runs, spec.min_time_s, spec.clock)
    if resume is not None:
        _check_resume(resume, spec, space, digest, settings, fp)
        if resume.complete:
            return resume
        profile = resume
        elapsed_before = resume.build_seconds
    else:
        call = runner.time_empty(TimingSettings(5, 50, 200, 0.05, spec.clock))
        profile = Profile(runtime=spec.runtime, threads=spec.threads, batch=spec.batch, precision="fp32",
                          height=spec.height, width=spec.width, space=space.name, space_digest=digest,
                          opset=runner.opset, fingerprint=fp, settings=settings,
                          call_overhead_ms=call.median_ms, tables=tuple(plan_tables(space, spec)), overhead=None,
                          complete=False, build_seconds=0.0, created=_now())
        elapsed_before = 0.0
        if save is not None:
            save(profile)
    cap = settings["op_flops_cap"]

    # work units for the ETA: a cell costs its FLOPs plus a fixed set-up (export, session), in MFLOP
    def work(key: TableKey, point: tuple[int, ...]) -> float:
        f = _op(key, point).flops(spec.batch)
        return (0.0 if cap is not None and f > cap else f / 1e6 * max(spec.min_runs, 1)) + 200.0

    todo = [(ti, ci) for ti, t in enumerate(profile.tables) for ci, r in enumerate(t.runs)
            if r == 0 and t.median_ms[ci] is None]
    cells = [t.cells() for t in profile.tables]
    total_work = sum(work(profile.tables[ti].key, cells[ti][ci]) for ti, ci in todo) + \
        spec.calibration * 2000.0
    done_work = 0.0
    tables = list(profile.tables)
    last_save = time.perf_counter()
    n_cells = sum(t.size for t in tables)
    n_done = n_cells - len(todo)

    def emit(stage: str, label: str) -> None:
        if progress is not None:
            progress({"stage": stage, "done": done_work, "total": total_work, "cells_done": n_done,
                      "cells": n_cells, "label": label,
                      "elapsed_s": elapsed_before + time.perf_counter() - t_start})

    def cell(tc: tuple[int, int]) -> Op:
        return _op(tables[tc[0]].key, cells[tc[0]][tc[1]])

    anchor = _anchor_cell(tables, cap, spec.batch)  # timed in every group of cells (the drift reference)
    drift: dict[str, Any] = {"anchor_op": _label(cell(anchor))}
    if "anchor_ms" in profile.settings:  # a resumed build keeps the level its first run measured
        drift["anchor_ms"] = profile.settings["anchor_ms"]

    def snapshot(complete: bool = False, overhead: Overhead | None = None) -> Profile:
        return replace(profile, settings={**profile.settings, **drift}, tables=tuple(tables), overhead=overhead,
                       complete=complete, build_seconds=elapsed_before + time.perf_counter() - t_start)

    emit("measure", "")
    # cells over the FLOPs cap stay empty (estimated after the loop); the smallest cell is always timed
    over = {tc for tc in todo if _over_cap(cell(tc), tc[1], cap, spec.batch)}
    timed = [tc for tc in todo if tc not in over]
    done_work += sum(work(tables[ti].key, cells[ti][ci]) for ti, ci in over)
    n_done += len(over)

    def cells_done(part: list[Drifted[tuple[int, int]]], reference_ms: float) -> None:
        nonlocal done_work, n_done, last_save
        drift["anchor_ms"] = reference_ms
        for d in part:
            ti, ci = d.item
            t = tables[ti]
            med, p10, p90, runs = list(t.median_ms), list(t.p10_ms), list(t.p90_ms), list(t.runs)
            med[ci], p10[ci], p90[ci], runs[ci] = d.timing.median_ms, d.timing.p10_ms, d.timing.p90_ms, d.timing.runs
            tables[ti] = replace(t, median_ms=tuple(med), p10_ms=tuple(p10), p90_ms=tuple(p90), runs=tuple(runs))
            done_work += work(t.key, cells[ti][ci])
            n_done += 1
        if save is not None and time.perf_counter() - last_save >= save_every_s:  # before the event (which may stop it)
            save(snapshot())
            last_save = time.perf_counter()
        if part:
            ti, ci = part[-1].item
            emit("measure", _label(cell((ti, ci))))

    with runner.calling():
        time_grouped(timed, lambda tc: runner.prepare_op(cell(tc)), lambda tc: op_bytes(cell(tc), spec.batch),
                     op_timing, anchor=anchor, cap_bytes=spec.group_bytes, max_items=spec.group_cells,
                     reference_ms=drift.get("anchor_ms"), on_group=cells_done)
    if save is not None:
        save(snapshot())
    tables = [_fill_estimates(t, spec.batch) for t in tables]

    # calibration: whole networks, timed in rounds, fitted against the sum of their ops. Their anchor is
    # the first network, not the cells' anchor op: an op's time depends on what runs between its calls
    # (caches), so one anchor cannot carry a level across the two phases (tried: with the cells' anchor
    # op in the networks' rounds, a 64x64 test profile predicted its networks 2.3x too fast)
    nets = sample_structures(space, spec.calibration, seed=spec.seed + 1_000_003, height=spec.height,
                             width=spec.width, max_flops=settings["max_flops"])
    net_timing = TimingSettings(1, spec.network_runs, spec.network_runs, 0.0, spec.clock)
    h, w = spec.height, spec.width
    if settings["in_network"]:  # each calibration network's nodes, from the runtime's profiler
        from zennas.latency.innetwork import factors, match

        plain = Predictor(replace(snapshot(), overhead=Overhead(0.0, 1.0, 0.0), complete=True))
        matched = []
        for i, s in enumerate(nets):
            matched += match(structure_ops(s, h, w), runner.node_times(s, h, w))
            emit("calibrate", f"profiled network {i + 1}/{len(nets)}")
        ratio = factors(matched, lambda op: max(0.0, plain.table_ms(op) - plain.call_ms), [t.key for t in tables])
        tables = [replace(t, in_network=ratio[t.key]) for t in tables]
    draft = replace(snapshot(), overhead=Overhead(0.0, 1.0, 0.0), complete=True)
    predictor = Predictor(draft)

    def nets_done(part: list[Drifted[Structure]], _reference_ms: float) -> None:
        nonlocal done_work
        done_work += 2000.0 * len(part)
        emit("calibrate", f"{len(part)} networks")

    with runner.calling():
        measured, _ = time_grouped(nets, lambda s: runner.prepare_structure(s, h, w),
                                   lambda s: structure_bytes(s, h, w, spec.batch), net_timing,
                                   cap_bytes=spec.group_bytes, on_group=nets_done)
    def row(s: Structure, ms: float) -> tuple[float, float, float, float]:
        ops = structure_ops(s, h, w)
        return (predictor.ops_ms(s), float(len(ops)), ms, math.fsum(op.activation_mb(spec.batch) for op in ops))

    pairs = [row(m.item, m.timing.median_ms) for m in measured]
    fit = fit_network(pairs)
    final = snapshot(complete=True, overhead=Overhead(fit.offset_ms, fit.scale, fit.per_op_ms, tuple(pairs),
                                                      per_mb_ms=fit.per_mb_ms, loo_error=fit.loo_error,
                                                      loo_error_mb=fit.loo_error_mb))
    if save is not None:
        save(final)
    log.info("profile built: %d tables, %d cells, scale %.3f, per op %.4f ms, per MB %.4f ms (leave-one-out "
             "error %s without the memory term, %s with it), offset %.3f ms, %.1f s", len(final.tables), n_cells,
             fit.scale, fit.per_op_ms, fit.per_mb_ms, _pct(fit.loo_error), _pct(fit.loo_error_mb), fit.offset_ms,
             final.build_seconds)
    return final


def _check_resume(p: Profile, spec: BuildSpec, space: SearchSpace, digest: str, settings: dict[str, Any],
                  fp: Fingerprint) -> None:
    for f, want in (("runtime", spec.runtime), ("threads", spec.threads), ("batch", spec.batch),
                    ("height", spec.height), ("width", spec.width), ("space", space.name),
                    ("space_digest", digest)):
        if getattr(p, f) != want:
            raise ProfileError(f"cannot resume: the profile has {f} = {getattr(p, f)!r}, this build {want!r}",
                               field=f)
    for k, v in settings.items():
        if p.settings.get(k) != v:
            raise ProfileError(f"cannot resume: the profile was built with {k} = {p.settings.get(k)!r}, "
                               f"this build has {v!r}", field=f"settings.{k}")
    diff = p.fingerprint.differences(fp)
    if diff:
        raise ProfileError(f"cannot resume on another machine or software stack (differs in {', '.join(diff)}): "
                           "a profile's cells must all be measured in one place", field="fingerprint")
