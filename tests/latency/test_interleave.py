"""Timing in rounds over groups, with the drift between groups divided out (zennas.latency.interleave).

The timed calls here sleep (the wall clock measures a sleep to ~0.1 ms), and the "machine" they run
on gets twice as slow between two groups, as a shared VM's speed moves between minutes."""

from __future__ import annotations

import pytest

from zennas.errors import SpecError
from zennas.latency.interleave import groups, time_grouped, time_rounds
from zennas.latency.runtimes import TimingSettings

pytestmark = pytest.mark.timeout(60)

WALL = TimingSettings(warmup=1, min_runs=5, max_runs=5, min_time_s=0.0, clock="wall")


def test_rounds_call_each_item_once_per_round_in_order() -> None:
    order: list[int] = []
    timed = time_rounds([lambda i=i: order.append(i) for i in range(3)], WALL)  # type: ignore[misc]
    assert order == [0, 1, 2] * 6  # one warm-up round, then five timed rounds
    assert [t.runs for t in timed] == [5, 5, 5]


def test_groups_respect_the_memory_cap_and_the_item_count() -> None:
    assert groups([4, 4, 4, 4], anchor_bytes=2, cap_bytes=10) == [[0, 1], [2, 3]]  # 2 + 4 + 4 <= 10
    assert groups([4] * 5, anchor_bytes=0, cap_bytes=100, max_items=2) == [[0, 1], [2, 3], [4]]
    assert groups([50, 1], anchor_bytes=0, cap_bytes=10) == [[0], [1]]  # an item over the cap still runs alone
    with pytest.raises(SpecError) as e:
        groups([1], anchor_bytes=0, cap_bytes=0)
    assert e.value.field == "group_bytes"


def test_the_drift_between_groups_is_divided_out() -> None:
    import time

    speed = {"now": 1.0}  # the machine: every call takes its item's ms times this
    made = {"n": 0}

    def prepare(ms: float) -> object:
        made["n"] += 1
        if made["n"] == 4:  # the anchor and the first group's two items are made: the machine slows down
            speed["now"] = 2.0
        return lambda: time.sleep(ms * speed["now"] / 1e3)

    items = [3.0, 2.0, 4.0, 2.0, 4.0]  # the first (3 ms) is the anchor; groups of two: [2, 4], [2, 4]
    timed, ref = time_grouped(items, prepare, lambda ms: 1, WALL, cap_bytes=10, max_items=2)  # type: ignore[arg-type]
    assert [d.item for d in timed] == items
    assert [round(d.factor, 1) for d in timed] == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert ref == pytest.approx(3.0, rel=0.2)
    for d in timed:  # the second group measured twice as slow, and is scaled back to the first's level
        assert d.timing.median_ms == pytest.approx(d.item, rel=0.2)
    # a given reference (a resumed build's) sets the level instead of the first group
    speed["now"], made["n"] = 1.0, 0
    timed, ref = time_grouped(items, prepare, lambda ms: 1, WALL, cap_bytes=10, max_items=2, reference_ms=6.0)  # type: ignore[arg-type]
    assert ref == 6.0 and timed[1].timing.median_ms == pytest.approx(4.0, rel=0.2)
