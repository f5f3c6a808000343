"""DriverEvaluator: the raw-tuple hot path gives exactly the figures of the Structure path and the library."""

from __future__ import annotations

import random

import pytest

from zennas.cost import costs
from zennas.score import make_scorer
from zennas.search.evaluate import DriverEvaluator
from zennas.search.spec import Budgets
from zennas.space import Mutator, get_space, space_names


@pytest.mark.parametrize("name", space_names())
def test_evaluate_raw_equals_evaluate_and_library(name: str) -> None:
    space = get_space(name)
    budgets = Budgets(flops=188e8, params=40e6, layers=91)
    m = Mutator(space, budget_layers=91, height=480, width=480)
    ev = DriverEvaluator(space.start, 480, 480, budgets, space.stage_weights)
    scorer = make_scorer("entropy-analytic", stage_weights=space.stage_weights)
    rng = random.Random(3)
    pool = [(m.to_raw(space.start), m.count_layers(m.to_raw(space.start)))]
    seen_ok = 0
    for _ in range(600):
        blocks, layers = m.mutate_raw(*pool[int(rng.random() * len(pool))], rng)
        s = m.to_structure(blocks)
        flops, params, n_layers, score = ev.evaluate_raw(blocks)
        rec, score2 = ev.evaluate(s)
        assert (flops, params, n_layers, score) == (rec.flops, rec.params, rec.layers, score2)  # exact
        lib = costs(s, 480, 480)
        assert n_layers == lib.layers == layers
        assert flops == pytest.approx(lib.flops, rel=1e-12) and params == lib.params
        assert score == pytest.approx(scorer(s).score, rel=1e-12)
        ok = ev.within(flops, params, n_layers)
        assert ok == (ev.violated(rec) is None)
        seen_ok += ok
        pool.append((blocks, layers))
        if len(pool) > 64:
            pool.pop(0)
    assert seen_ok > 0


def test_within_without_budgets() -> None:
    space = get_space("detection-k1kxk1")
    ev = DriverEvaluator(space.start, 480, 480, Budgets(), space.stage_weights)
    assert ev.within(1e30, 1e30, 10**9)
