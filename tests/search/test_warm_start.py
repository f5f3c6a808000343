"""Warm starts whose block layout differs from the space's start (issue 14, item 4).

``detection-k1kxk1``'s own start has 6 blocks with a stride-1 block at index 4; ``r50_like`` and
``maedet_s`` have 5, all stride 2. Every sampler must search in the start's layout: candidates keep
its block count and strides, and every recorded cost equals a from-scratch count of the recorded
structure.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from zennas.cost import costs
from zennas.errors import SpecError
from zennas.search import Budgets, SearchSpec, SearchStore, run_search
from zennas.search.driver import decode
from zennas.space import Block, Structure, get_space, load_structure
from zennas.space.formats import structure_from_obj

optuna.logging.set_verbosity(optuna.logging.WARNING)
EXAMPLES = Path(__file__).parent.parent.parent / "examples"
BUDGETS = Budgets(flops=30e9, layers=130)  # room above both starts (r50_like: 18.7 G / 49, maedet_s: 11.0 G / 79)


def _layout(s: Structure) -> tuple[tuple[str, int], ...]:
    return tuple((b.type, b.stride) for b in s.blocks)


def _run(tmp_path: Path, start: Structure, sampler: str, sid: str) -> list[dict[str, object]]:
    store = SearchStore.open(tmp_path / "s.db")
    try:
        spec = SearchSpec(space="detection-k1kxk1", score="entropy-analytic", start=start, budgets=BUDGETS,
                          sampler=sampler, population=8, iterations=120, generation=8, seed=0,
                          checkpoint_every=64)
        r = run_search(spec, store=store, search_id=sid)
        assert _layout(r.best_structure) == _layout(start)
        # Optuna's samplers draw widths anywhere up to 2048, so most of their candidates break the budget
        # (rejected); none may fail, which is what a layout mismatch did to every one of them
        assert r.failed == 0, f"{sampler}: {r.failed} candidates failed"
        assert r.evaluated + r.rejected == r.n_trials
        if sampler == "evolution":
            assert r.evaluated > 0
        return store.trials(sid)
    finally:
        store.engine.dispose()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sampler", ["evolution", "nsga2", "random"])
@pytest.mark.parametrize("example", ["r50_like.txt", "maedet_s.txt"])
def test_every_sampler_searches_in_the_start_layout(tmp_path: Path, sampler: str, example: str) -> None:
    start = load_structure(EXAMPLES / example)
    assert len(start.blocks) != len(get_space("detection-k1kxk1").start.blocks)  # the case the issue names
    rows = _run(tmp_path, start, sampler, f"warm-{sampler}")
    assert len(rows) == 120
    for row in rows:
        s = decode(row["structure"])
        assert _layout(s) == _layout(start)
        c = costs(s, 480, 480)
        assert (row["flops"], row["params"], row["layers"]) == (c.flops, c.params, c.layers)
        assert row["state"] in ("complete", "rejected")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sampler", ["evolution", "nsga2", "random"])
def test_same_block_count_other_strides_costs_are_right(tmp_path: Path, sampler: str) -> None:
    """6 blocks like the space's start, but the stride-1 block at index 2 instead of 4: the costs of
    every candidate still equal a count from scratch (the layout comes from the start)."""
    space_start = get_space("detection-k1kxk1").start
    blocks = list(space_start.blocks)
    assert [b.stride for b in blocks] == [2, 2, 2, 2, 1, 2]
    k = "SuperResK1KXK1"
    start = Structure((blocks[0], blocks[1], Block(k, 256, 512, 1, 3, 1, 128), Block(k, 512, 768, 2, 3, 1, 256),
                       Block(k, 768, 1024, 2, 3, 1, 256), blocks[5]))
    assert len(start.blocks) == len(space_start.blocks) and _layout(start) != _layout(space_start)
    rows = _run(tmp_path, start, sampler, f"strides-{sampler}")
    for row in rows:
        s = decode(row["structure"])
        assert _layout(s) == _layout(start)
        c = costs(s, 480, 480)
        assert (row["flops"], row["params"], row["layers"]) == (c.flops, c.params, c.layers)


@pytest.mark.timeout(60)
def test_evolution_shrinks_kernels_by_the_start_feature_maps(tmp_path: Path) -> None:
    """At 32x32 the mutation shrinks a kernel k while k * 1.5 > its input map: with the stride-1 block at
    index 2 the maps are 32, 16, 8, 8, 4, 2, so exactly blocks 4 and 5 end at kernel 1 (with the
    space's own layout, 32, 16, 8, 4, 2, 2, block 3 would wrongly shrink too)."""
    space_start = get_space("detection-k1kxk1").start
    blocks = list(space_start.blocks)
    k = "SuperResK1KXK1"
    start = Structure((blocks[0], blocks[1], Block(k, 256, 512, 1, 3, 1, 128), Block(k, 512, 768, 2, 3, 1, 256),
                       Block(k, 768, 1024, 2, 3, 1, 256), blocks[5]))
    store = SearchStore.open(tmp_path / "s.db")
    try:
        spec = SearchSpec(space="detection-k1kxk1", score="entropy-analytic", start=start, budgets=BUDGETS,
                          population=8, iterations=64, generation=8, seed=0, height=32, width=32)
        run_search(spec, store=store, search_id="shrink")
        rows = store.trials("shrink")
    finally:
        store.engine.dispose()
    assert len(rows) == 64
    for row in rows:
        kernels = [b.kernel for b in decode(row["structure"]).blocks]
        assert [kk == 1 for kk in kernels] == [False, False, False, False, True, True], kernels


@pytest.mark.timeout(30)
def test_a_start_the_space_cannot_mutate_is_rejected_naming_start() -> None:
    four_stages = structure_from_obj([
        {"type": "ConvKXBNRELU", "in": 3, "out": 32, "stride": 2, "kernel": 3},
        {"type": "SuperResK1KXK1", "in": 32, "out": 64, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 16},
        {"type": "SuperResK1KXK1", "in": 64, "out": 128, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 32},
        {"type": "SuperResK1KXK1", "in": 128, "out": 256, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 64},
    ])
    with pytest.raises(SpecError, match="start has 4 stages") as ei:
        run_search(SearchSpec(space="detection-k1kxk1", start=four_stages, iterations=10))
    assert ei.value.field == "start.blocks"
    dw = get_space("detection-dw").start  # K1DWK1 blocks: not a block type of detection-k1kxk1
    with pytest.raises(SpecError, match="not allowed there") as ei:
        run_search(SearchSpec(space="detection-k1kxk1", start=dw, iterations=10))
    assert ei.value.field == "start.blocks[1].type"
