"""The evolution's warm-up (SearchSpec.warmup_population / warmup_iterations): a small population for
the first trials, then the full one. Deterministic for a seed, budgets respected, resume exact,
independent of how many workers evaluate and in which order they finish."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import optuna
import pytest

from zennas.cost import costs
from zennas.errors import SpecError
from zennas.search import Budgets, Search, SearchSpec, SearchStore, run_search
from zennas.search.population import Population
from zennas.space import get_space
from zennas.space.mutation import Mutator
from zennas.space.structure import Structure

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAEDET = Budgets(flops=188e8, layers=91)


def spec(**kw: object) -> SearchSpec:
    base = {"budgets": MAEDET, "population": 32, "iterations": 1500, "seed": 0, "checkpoint_every": 256,
            "warmup_population": 4, "warmup_iterations": 600}
    base.update(kw)
    return SearchSpec(**base)  # type: ignore[arg-type]


def history(store: SearchStore, sid: str) -> list[tuple[int, str, float | None, str]]:
    return [(r["number"], r["state"], r["score"], r["structure"]) for r in store.trials(sid)]


def members(store: SearchStore, sid: str) -> tuple[int, int]:
    cp = store.load(sid)
    assert cp is not None
    p = cp.state["population"]
    return p["size"], len(p["members"])


def test_defaults_and_spec_round_trip() -> None:
    s = SearchSpec()
    assert (s.warmup_population, s.warmup_iterations) == (16, 10_000)
    assert s.warmup_size() == 16
    assert SearchSpec(population=16).warmup_size() is None  # nothing to grow to
    assert SearchSpec(population=8).warmup_size() is None  # capped at the population: no warm-up
    assert SearchSpec(warmup_iterations=0).warmup_size() is None
    d = spec().to_dict()
    assert d["warmup_population"] == 4 and d["warmup_iterations"] == 600
    assert SearchSpec.from_dict(d) == spec()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"warmup_population": 1}, "warmup_population"),
        ({"warmup_population": 2.5}, "warmup_population"),
        ({"warmup_population": True}, "warmup_population"),
        ({"warmup_iterations": -1}, "warmup_iterations"),
        ({"warmup_iterations": "10k"}, "warmup_iterations"),
    ],
)
def test_validation_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as e:
        spec(**kw)
    assert e.value.field == field
    with pytest.raises(SpecError) as e2:
        SearchSpec.from_dict({**SearchSpec().to_dict(), **kw})
    assert e2.value.field == field


def test_deterministic_for_a_seed_and_not_the_plain_run() -> None:
    a = run_search(spec(seed=3))
    b = run_search(spec(seed=3))
    assert (a.best_structure, a.best_score, a.best_curve) == (b.best_structure, b.best_score, b.best_curve)
    plain = run_search(spec(seed=3, warmup_iterations=0))
    assert plain.best_curve != a.best_curve
    # no warm-up, two ways: both are exactly the plain algorithm
    same = run_search(spec(seed=3, warmup_population=32))
    assert (same.best_structure, same.best_curve) == (plain.best_structure, plain.best_curve)


def test_population_grows_at_the_end_of_the_warm_up(tmp_path: Path) -> None:
    store = SearchStore.open(tmp_path / "g.db")
    Search(spec(iterations=512, checkpoint_every=64), store=store, search_id="w").run()
    assert members(store, "w") == (4, 4)  # still warming up: the top 4 only
    Search(spec(iterations=1500), store=store, search_id="f").run()
    assert members(store, "f") == (32, 32)  # grown to the full population
    # a warm-up of 0 starts full-size
    Search(spec(iterations=256, warmup_iterations=0), store=store, search_id="p").run()
    assert members(store, "p")[0] == 32


def test_budgets_respected_with_warm_up(tmp_path: Path) -> None:
    store = SearchStore.open(tmp_path / "b.db")
    b = Budgets(flops=12e9, layers=60, params=20e6)
    r = Search(spec(budgets=b), store=store, search_id="b").run()
    c = costs(r.best_structure, 480, 480)
    assert c.flops <= 12e9 and c.layers <= 60 and c.params <= 20e6
    rows = store.trials("b")
    assert len(rows) == 1500 and any(x["state"] == "rejected" for x in rows)
    for x in rows:
        if x["state"] == "rejected":
            assert x["score"] is None
        else:
            assert x["flops"] <= 12e9 and x["layers"] <= 60 and x["params"] <= 20e6
    cp = store.load("b")
    assert cp is not None
    keys = [json.dumps(m[0]) for m in cp.state["population"]["members"]]
    assert len(keys) == len(set(keys)) == 32  # the seed copies are long gone; no duplicates


@pytest.mark.parametrize("stop_after", [12, 60])  # stopped inside the warm-up / after the growth
def test_resume_across_the_growth_equals_uninterrupted(tmp_path: Path, stop_after: int) -> None:
    full_store = SearchStore.open(tmp_path / "full.db")
    full = Search(spec(), store=full_store, search_id="x").run()

    store = SearchStore.open(tmp_path / "cut.db")
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > stop_after

    first = Search(spec(), store=store, search_id="x", should_stop=stop)
    part = first.run()
    assert first.stopped and 0 < part.n_trials < 1500
    assert (part.n_trials < 600) == (stop_after == 12)
    resumed = Search(spec(), store=store, search_id="x").run(resume=True)
    assert (resumed.best_structure, resumed.best_score) == (full.best_structure, full.best_score)
    assert resumed.best_curve == full.best_curve
    assert history(store, "x") == history(full_store, "x")


class _ShuffledBackend:
    """Evaluates on ``workers`` pretend workers that finish in a random order; returns the records in
    task order, as the real backends do. Measures a fake latency (the only reason the driver calls it)."""

    name = "shuffled"

    def __init__(self, workers: int, order_seed: int) -> None:
        self.workers = workers
        self.rng = random.Random(order_seed)

    def evaluate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done: dict[int, dict[str, Any]] = {}
        order = list(range(len(tasks)))
        self.rng.shuffle(order)
        for k in order:
            t = tasks[k]
            s = Structure.from_dict({"blocks": t["structure"]})
            lat = costs(s, t["height"], t["width"]).flops / 1e9  # deterministic "latency"
            bad = t["latency_budget_ms"] is not None and lat > t["latency_budget_ms"]
            done[k] = {"number": t["number"], "state": "rejected" if bad else "complete",
                       "reason": "latency_ms" if bad else None, "score": None, "latency_ms": lat,
                       "worker": f"w{k % self.workers}", "attempts": 1, "seconds": 0.0}
        return [done[k] for k in range(len(tasks))]

    def close(self) -> None:
        pass


def test_independent_of_worker_count_and_completion_order() -> None:
    sp = spec(iterations=900, budgets=Budgets(flops=188e8, layers=91, latency_ms=17.0))
    runs = [run_search(sp, backend=_ShuffledBackend(w, order)) for w, order in ((1, 0), (3, 1), (7, 2))]
    for r in runs[1:]:
        assert (r.best_structure, r.best_score, r.best_curve) == (runs[0].best_structure, runs[0].best_score,
                                                                 runs[0].best_curve)
    assert runs[0].rejected > 0  # the latency budget bit


def test_population_resize() -> None:
    sp = get_space("detection-k1kxk1")
    m = Mutator(sp, budget_layers=91)
    rng = random.Random(0)
    distinct: list[Structure] = []
    while len(distinct) < 11:
        s = m.mutate(distinct[-1] if distinct else sp.start, rng)
        if s not in distinct:
            distinct.append(s)
    pop = Population(3)
    for i, s in enumerate(distinct[:10]):
        pop.insert(s, float(i))
    assert sorted(pop.scores()) == [7.0, 8.0, 9.0]
    pop.resize(5)
    pop.insert(distinct[10], -1.0)  # room again: even a poor candidate enters
    assert len(pop) == 4 and pop.size == 5 and pop.state()["size"] == 5
    pop.resize(2)  # shrinking evicts the worst
    assert sorted(pop.scores()) == [8.0, 9.0]
    with pytest.raises(ValueError):
        pop.resize(1)
