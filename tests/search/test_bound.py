"""The optimality certificate (zennas.search.bound): a true upper bound, and the structures it returns."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest

from zennas.cost import costs
from zennas.score.analytic import analytic_score
from zennas.search.bound import BoundUnavailable, bound, channel_closure, relax
from zennas.space.mutation import Mutator
from zennas.space.space import SearchSpace, get_space, space_from_dict
from zennas.space.structure import Block, Structure

# a tiny space whose relaxed set can be enumerated: stem + two bottleneck blocks, channels 8..32
TINY: dict[str, Any] = {
    "name": "tiny",
    "start": [
        {"type": "ConvKXBNRELU", "in": 3, "out": 8, "stride": 2, "kernel": 3, "layers": 1},
        {"type": "SuperResK1KXK1", "in": 8, "out": 16, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 8},
        {"type": "SuperResK1KXK1", "in": 16, "out": 24, "stride": 2, "kernel": 3, "layers": 1, "bottleneck": 8},
    ],
    "stages": 3,
    "stage_weights": [0.5, 1.0, 3.0],
    "mutation": {"max_channels": 32, "stem_max_out": 16, "kernels": [3, 5], "first_block_max_layers": 2,
                 "btn_min_divisor": 2.0},
    "budgets": {"flops": 2.0e8, "layers": 13, "height": 224, "width": 224},
}


def tiny_space() -> SearchSpace:
    return space_from_dict(TINY, source="tiny")


def enumerate_relaxed(space: SearchSpace, layers_budget: int, h: int) -> list[Structure]:
    """Every structure of the relaxed set, by brute force (independent of the programme's tables)."""
    rel = relax(space, space.start, budget_layers=layers_budget, height=h, width=h, weights=space.stage_weights)
    per_block: list[list[tuple[int, int, int, int | None]]] = []
    for p in rel.positions:
        opts = []
        for oi, o in enumerate(p.outs):
            for k in p.kernels:
                for n in p.layers:
                    if p.btns is None:
                        opts.append((o, k, n, None))
                    else:
                        assert p.btn_floor is not None
                        opts.extend((o, k, n, b) for b in p.btns if b >= p.btn_floor[oi] - 1e-9)
        per_block.append(opts)
    out = []
    for combo in itertools.product(*per_block):
        prev = space.start.in_channels
        blocks = []
        ok = True
        for p, (o, k, n, b) in zip(rel.positions, combo, strict=True):
            if p.monotone and o < prev:
                ok = False
                break
            blocks.append(Block(p.type, prev, o, p.stride, k, n, b))
            prev = o
        if ok:
            out.append(Structure(tuple(blocks)))
    return out


@pytest.mark.timeout(240)
def test_bound_holds_and_is_attained_on_a_brute_forced_tiny_space() -> None:
    space = tiny_space()
    h = 224
    layers = 13
    structures = enumerate_relaxed(space, layers, h)
    assert len(structures) > 1000
    rows = []
    for s in structures:
        c = costs(s, h, h)
        rows.append((analytic_score(s, space.stage_weights), c.flops, c.params, c.layers))
    flops_all = sorted(r[1] for r in rows)
    # several FLOPs budgets (binding ones, from the distribution of the set), with and without params
    for q, params in ((0.05, None), (0.3, None), (0.7, None), (0.3, sorted(r[2] for r in rows)[len(rows) // 4])):
        F = flops_all[int(q * (len(flops_all) - 1))]
        feasible = [r for r in rows if r[1] <= F and r[3] <= layers and (params is None or r[2] <= params)]
        opt = max(r[0] for r in feasible)
        res = bound(space, budget_flops=F, budget_params=params, budget_layers=layers, height=h)
        assert res.bound >= opt - 1e-9, (q, res.bound, opt)
        assert res.structure is not None and res.score is not None
        c = costs(res.structure, h, h)
        assert c.flops <= F and c.layers <= layers and (params is None or c.params <= params)
        assert res.score == pytest.approx(analytic_score(res.structure, space.stage_weights), abs=1e-9)
        assert (res.flops, res.params, res.layers) == (c.flops, c.params, c.layers)
        assert res.score <= opt + 1e-9
        if params is None:
            assert (res.bound - opt) / abs(opt) < 0.05  # and not vacuous


def test_layers_only_budget_is_solved_exactly() -> None:
    space = tiny_space()
    structures = enumerate_relaxed(space, 10, 224)
    opt = max(analytic_score(s, space.stage_weights) for s in structures if costs(s, 224, 224).layers <= 10)
    res = bound(space, budget_layers=10, height=224)
    assert res.exact and res.bound == pytest.approx(opt, abs=1e-9) and res.score == pytest.approx(opt, abs=1e-9)


def walk(space: SearchSpace, start: Structure, budgets: dict[str, Any], h: int, steps: int, seed: int,
         greedy: bool) -> list[Structure]:
    """Structures the mutation reaches under the budgets: a random walk, or a greedy climb (accept a
    child that scores at least as well), each step one `Mutator.mutate` from the current structure."""
    mut = Mutator(space, budget_layers=budgets.get("layers"), height=h, width=h)
    rng = random.Random(seed)
    cur, cur_score = start, analytic_score(start, space.stage_weights)
    seen = []
    for _ in range(steps):
        child = mut.mutate(cur, rng)
        c = costs(child, h, h)
        if (c.flops > budgets.get("flops", math.inf) or c.layers > budgets.get("layers", math.inf)
                or c.params > budgets.get("params", math.inf)):
            continue
        sc = analytic_score(child, space.stage_weights)
        seen.append(child)
        if not greedy or sc >= cur_score:
            cur, cur_score = child, sc
    return seen


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "budgets"), [
    ("detection-k1kxk1", {"flops": 188e8, "layers": 91}),
    ("detection-k1kxk1", {"flops": 60e8, "layers": 60, "params": 20e6}),
    ("detection-dw", {"flops": 3e9, "layers": 64}),
    ("giraffe-s2d", {"flops": 6e9, "layers": 32}),
])
def test_no_structure_the_mutation_reaches_exceeds_the_bound(name: str, budgets: dict[str, Any]) -> None:
    space = get_space(name)
    res = bound(space, budget_flops=budgets["flops"], budget_params=budgets.get("params"),
                budget_layers=budgets["layers"], height=480)
    assert res.structure is not None and res.score is not None and res.score <= res.bound
    worst_gap = math.inf
    for seed in range(3):
        for greedy in (False, True):
            for s in walk(space, space.start, budgets, 480, 1500, seed, greedy):
                sc = analytic_score(s, space.stage_weights)
                assert sc <= res.bound + 1e-9, (name, s.to_dict(), sc, res.bound)
                worst_gap = min(worst_gap, res.bound - sc)
    assert worst_gap >= 0


def test_closure_covers_every_channel_the_mutation_produces() -> None:
    space = get_space("detection-k1kxk1")
    vals = set(channel_closure(space, space.start))
    for s in walk(space, space.start, {"flops": 188e8, "layers": 91}, 480, 3000, 7, False):
        for b in s.blocks[1:]:
            assert b.out_channels in vals and b.bottleneck in vals


def test_a_bound_needs_a_budget_and_the_mutation_bounds_layers() -> None:
    space = tiny_space()
    with pytest.raises(BoundUnavailable, match="budget"):
        bound(space, height=224)
    doc = {**TINY, "mutation": {**TINY["mutation"], "first_block_max_layers": None}, "start": TINY["start"][:2],
           "stages": 2, "stage_weights": [1.0, 1.0]}
    with pytest.raises(BoundUnavailable, match="layers budget"):
        bound(space_from_dict(doc, source="x"), budget_flops=1e8, height=224)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "pick", "layers"), [
    ("detection-k1kxk1", "any", 91), ("detection-k1kxk1", "reference", 60), ("detection-dw", "any", 64),
    ("giraffe-s2d", "any", 32), ("tiny", "any", 13),
])
def test_every_structure_the_mutation_reaches_lies_in_the_relaxed_set(name: str, pick: str, layers: int) -> None:
    """The bound's premise, checked directly: long unconstrained random walks (only the layers budget,
    which the mutation itself enforces) never leave the relaxation."""
    space = tiny_space() if name == "tiny" else get_space(name)
    if pick != space.mutation.pick:
        doc = space.to_dict()
        doc["mutation"]["pick"] = pick
        space = space_from_dict(doc, source="pick")
    h = space.budgets.height
    rel = relax(space, space.start, budget_layers=layers, height=h, width=h, weights=space.stage_weights)
    mut = Mutator(space, budget_layers=layers, height=h, width=h)
    for seed in range(4):
        rng = random.Random(seed)
        cur = space.start
        for _ in range(5000):
            cur = mut.mutate(cur, rng)
            assert rel.outside(cur) is None, (rel.outside(cur), cur.to_dict())


def test_long_chains_are_refused_before_any_table_is_built() -> None:
    """A 2,000-block search (tests/search/test_store_large.py) must not build the programme's tables:
    it is refused up front, naming ``start``, and a search reports "no bound" instead."""
    from zennas.search.bound import MAX_BLOCKS, BoundUnavailable, certificate
    from zennas.search.spec import Budgets
    from zennas.space.space import get_space
    from zennas.space.structure import Block, Structure

    sp = get_space("detection-k1kxk1")
    stem = sp.start.blocks[0]
    blocks = [stem] + [Block("SuperResK1KXK1", stem.out_channels, stem.out_channels, 1, 3, 1, 16)
                       for _ in range(MAX_BLOCKS)]
    long = Structure(tuple(blocks))
    with pytest.raises(BoundUnavailable) as e:
        bound(sp, start=long, budget_flops=1e12, budget_layers=10_000)
    assert e.value.field == "start"
    cert = certificate(sp, long, budgets=Budgets(flops=1e12, layers=10_000), height=480, width=480,
                       weights=sp.stage_weights, sampler="evolution", best_score=1.0)
    assert cert == {"available": False, "reason": cert["reason"]} and str(MAX_BLOCKS) in cert["reason"]
