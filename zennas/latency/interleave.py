"""Timing many things so that the machine's drift is shared, not hidden in the comparison.

A shared machine (a cloud VM, a laptop that throttles) changes speed over seconds and minutes: on the
2-core VM zennas is developed on, the same ONNX backbone measured 19.6 ms in one session and 25 ms in
the next, seconds later, and two sequential passes over 40 structures (a new session each, 3 runs or 1 s each)
agreed within +-10 % for only 25-43 % of them. Timed **in rounds** (one call of each item per round,
every item's session held open) the same 40 agreed within +-10 % for all 40 (mean difference 0.9 %,
40 rounds): every item samples the same stretch of the machine's drift.

A round needs every item's session at once, so items are timed in **groups** whose estimated memory
stays under a cap, and one **anchor** item is timed in every group: each group's timings are scaled
by the anchor's median in the first group divided by its median in that group, so groups timed
minutes apart stay comparable. The factor is returned with each timing (1.0 in the first group).

``profile build`` times the table's cells and the calibration networks this way, ``profile check``
its structures; a single measurement against a budget (the search's verification) is not interleaved
(it is one item, timed as the deployment will run it).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from zennas.errors import SpecError

if TYPE_CHECKING:  # runtimes imports torch; this module is imported without it
    from zennas.latency.runtimes import Timing, TimingSettings

T = TypeVar("T")
GROUP_BYTES = 2 << 30  # default memory cap of one group's held sessions
MAX_GROUP = 256  # items per group at most (a group's sessions are all open at once)


@dataclass(frozen=True, slots=True)
class Drifted(Generic[T]):
    """One item's timing after the drift correction, and the factor applied to it."""

    item: T
    timing: Timing
    factor: float  # the reference (the anchor's first-group median) / the anchor's median in this item's group


def time_rounds(calls: Sequence[Callable[[], object]], t: TimingSettings) -> list[Timing]:
    """``t.warmup`` untimed rounds, then timed rounds (one call of each per round, in order) until
    every call has ``t.min_runs`` times and ``t.min_time_s`` per call has passed, up to ``t.max_runs``."""
    from zennas.latency.runtimes import timing_of

    for _ in range(t.warmup):
        for c in calls:
            c()
    clock = time.thread_time if t.clock == "cpu" else time.perf_counter
    wall = time.perf_counter
    times: list[list[float]] = [[] for _ in calls]
    end = wall() + t.min_time_s * len(calls)
    rounds = 0
    while rounds < t.max_runs and (rounds < t.min_runs or wall() < end):
        for c, ts in zip(calls, times, strict=True):
            t0 = clock()
            c()
            ts.append((clock() - t0) * 1e3)
        rounds += 1
    return [timing_of(ts) for ts in times]


def groups(sizes: Sequence[int], anchor_bytes: int, cap_bytes: int, max_items: int = MAX_GROUP) -> list[list[int]]:
    """Indices of items of ``sizes`` (bytes each) split in order into groups that, with the anchor,
    stay under ``cap_bytes`` (a group holds at least one item, however big) and ``max_items``."""
    if cap_bytes < 1:
        raise SpecError(f"group_bytes must be >= 1, got {cap_bytes}", field="group_bytes")
    out: list[list[int]] = []
    cur: list[int] = []
    used = anchor_bytes
    for i, b in enumerate(sizes):
        if cur and (used + b > cap_bytes or len(cur) >= max_items):
            out.append(cur)
            cur, used = [], anchor_bytes
        cur.append(i)
        used += b
    if cur:
        out.append(cur)
    return out


def time_grouped(items: Sequence[T], prepare: Callable[[T], Callable[[], object]], nbytes: Callable[[T], int],
                 t: TimingSettings, *, anchor: T | None = None, cap_bytes: int = GROUP_BYTES,
                 max_items: int = MAX_GROUP, reference_ms: float | None = None,
                 on_group: Callable[[list[Drifted[T]], float], None] | None = None) -> tuple[list[Drifted[T]], float]:
    """Every item timed in rounds (:func:`time_rounds`), in memory-bounded groups with the anchor
    (default: the first item; one session kept open; its own result is its first group's) timed in
    each, each group's timings scaled by ``reference_ms`` / the anchor's median in that group. ``reference_ms`` defaults to the anchor's
    median in the first group (a resumed build passes the one it recorded). Returns the results in the
    order of ``items`` and the reference. ``prepare`` builds an item's call (its session); ``on_group``
    gets each group's results and the reference as it finishes, for progress and saving."""
    if not items:
        return [], reference_ms or 0.0
    anchor = items[0] if anchor is None else anchor
    at = next((i for i, it in enumerate(items) if it == anchor), None)  # the anchor among the items, if it is
    rest = [i for i in range(len(items)) if i != at]
    parts = [[rest[j] for j in g] for g in groups([nbytes(items[i]) for i in rest], nbytes(anchor), cap_bytes,
                                                  max_items)] or [[]]
    out: list[Drifted[T] | None] = [None] * len(items)
    anchor_call = prepare(anchor)  # one session for every group
    ref = reference_ms
    for g, part in enumerate(parts):
        calls = [anchor_call] + [prepare(items[i]) for i in part]
        timed = time_rounds(calls, t)
        del calls
        gc.collect()  # the group's sessions are released before the next group's are made
        a = timed[0].median_ms
        if ref is None:
            ref = a
        f = ref / a if a > 0 else 1.0
        done = [Drifted(items[i], _scaled(tm, f), f) for i, tm in zip(part, timed[1:], strict=True)]
        where = list(part)
        if at is not None and g == 0:  # the anchor's own result: its first group's timing
            done.insert(0, Drifted(items[at], _scaled(timed[0], f), f))
            where.insert(0, at)
        for d, i in zip(done, where, strict=True):
            out[i] = d
        if on_group is not None:
            on_group(done, ref)
    assert ref is not None
    return [d for d in out if d is not None], ref


def _scaled(t: Timing, f: float) -> Timing:
    from zennas.latency.runtimes import Timing

    if f == 1.0:
        return t
    return Timing(t.median_ms * f, t.p10_ms * f, t.p90_ms * f, t.runs)


def structure_bytes(s: object, height: int, width: int, batch: int = 1) -> int:
    """What a held session of the whole backbone keeps: its weights and its activations' peak (the
    admission estimate of a latency measurement, :func:`zennas.admission.estimate`)."""
    from zennas.admission import estimate

    e = estimate(s, "latency", height=height, width=width, batch=batch)  # type: ignore[arg-type]
    return e.weight_bytes + e.activation_bytes


def op_bytes(op: object, batch: int = 1) -> int:
    """What a held session of one op keeps: its input, output (and residual) and weights, twice
    (the runtime's copies), in float32."""
    from zennas.latency.ops import Op, out_size

    assert isinstance(op, Op)
    k = op.key
    cin, cout = op.channels
    ho, wo = out_size(k.height, k.stride), out_size(k.width, k.stride)
    acts = batch * (cin * k.height * k.width + 2 * cout * ho * wo)
    groups = cin if k.depthwise else 1
    weights = cin * cout * k.kernel * k.kernel // groups
    return 4 * 2 * (acts + weights)
