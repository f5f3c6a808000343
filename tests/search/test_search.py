"""The search engine's contract: determinism, budgets, population invariants, resume, NSGA-II."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from zennas.cost import costs
from zennas.errors import SpecError, ZenNASError
from zennas.score.analytic import analytic_score
from zennas.search import Budgets, Search, SearchSpec, SearchStore, run_search
from zennas.search.driver import _non_dominated, decode
from zennas.search.export import export_optuna
from zennas.search.population import Population
from zennas.search.store import search_trials
from zennas.space import Structure, get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAEDET = Budgets(flops=188e8, layers=91)


def spec(**kw: object) -> SearchSpec:
    base = {"budgets": MAEDET, "population": 32, "iterations": 1500, "seed": 0, "checkpoint_every": 256}
    base.update(kw)
    return SearchSpec(**base)  # type: ignore[arg-type]


def history(store: SearchStore, sid: str) -> list[tuple[int, str, float | None, str]]:
    return [(r["number"], r["state"], r["score"], r["structure"]) for r in store.trials(sid)]


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a = run_search(spec(seed=3))
    b = run_search(spec(seed=3))
    c = run_search(spec(seed=4))
    assert a.best_structure == b.best_structure and a.best_score == b.best_score
    assert a.best_curve == b.best_curve
    assert (c.best_structure, c.best_curve) != (a.best_structure, a.best_curve)


def test_budgets_never_violated_and_population_invariants(tmp_path: Path) -> None:
    store = SearchStore.open(tmp_path / "s.db")
    # the default warm-up (16 members) ends at trial 500 here, so the population is full-size at the end
    s = Search(spec(budgets=Budgets(flops=12e9, layers=60, params=20e6), warmup_iterations=500), store=store,
               search_id="b")
    r = s.run()
    c = costs(r.best_structure, 480, 480)
    assert c.flops <= 12e9 and c.layers <= 60 and c.params <= 20e6
    rows = store.trials("b")
    assert len(rows) == 1500
    rejected = [x for x in rows if x["state"] == "rejected"]
    assert rejected, "the budget is tight enough that some candidates break it"
    for x in rows:  # rejected before scoring: no score; every scored one is within budget
        if x["state"] == "rejected":
            assert x["score"] is None and x["reason"] in ("flops", "layers", "params")
        else:
            assert x["flops"] <= 12e9 and x["layers"] <= 60 and x["params"] <= 20e6
    pop = store.load("b").state["population"]["members"]  # type: ignore[union-attr]
    assert len(pop) == 32
    keys = [json.dumps(m[0]) for m in pop]
    start = json.dumps([[b.type, b.in_channels, b.out_channels, b.stride, b.kernel, b.layers, b.bottleneck]
                        for b in get_space("detection-k1kxk1").start.blocks])
    distinct = [k for k in keys if k != start]
    assert len(distinct) == len(set(distinct)), "no duplicate structures besides the seed copies"
    for m in pop:  # every member's score is its structure's entropy-analytic, computed from scratch
        assert m[1] == pytest.approx(analytic_score(decode(m[0])), rel=1e-12)


def test_population_keeps_top_and_deduplicates() -> None:
    import random

    from zennas.space.mutation import Mutator

    sp = get_space("detection-k1kxk1")
    m = Mutator(sp, budget_layers=91)
    rng = random.Random(0)
    structs: list[Structure] = []
    while len(structs) < 50:  # 50 distinct structures
        s = m.mutate(sp.start, rng)
        if s not in structs:
            structs.append(s)
    pop = Population(5)
    for i, s in enumerate(structs):
        pop.insert(s, float(i))
        pop.insert(s, float(i) + 100)  # a duplicate never enters twice
    assert len(pop) == 5
    assert sorted(pop.scores()) == [45.0, 46.0, 47.0, 48.0, 49.0]
    assert sorted(pop.items(), key=lambda x: x[1]) == [(structs[i], float(i)) for i in range(45, 50)]


def test_sampler_does_not_scan_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The population is incremental: asking never walks the study's trials (no O(n) per ask)."""
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("sampler scanned the study's trials")

    monkeypatch.setattr(optuna.study.Study, "get_trials", boom)
    monkeypatch.setattr(optuna.study.Study, "_get_trials", boom)
    r = run_search(spec(iterations=300))
    assert r.n_trials == 300


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    full_store = SearchStore.open(tmp_path / "full.db")
    full = Search(spec(), store=full_store, search_id="x").run()

    store = SearchStore.open(tmp_path / "cut.db")
    calls = {"n": 0}

    def stop_after_some() -> bool:
        calls["n"] += 1
        return calls["n"] > 40  # ~40 generations of 16 = 640 trials, past two checkpoints

    first = Search(spec(), store=store, search_id="x", should_stop=stop_after_some)
    part = first.run()
    assert first.stopped and 0 < part.n_trials < 1500
    resumed = Search(spec(), store=store, search_id="x").run(resume=True)
    assert resumed.best_structure == full.best_structure
    assert resumed.best_score == full.best_score
    assert history(store, "x") == history(full_store, "x")


def test_resume_after_a_crash_discards_uncommitted_rows(tmp_path: Path) -> None:
    """Rows past the last checkpoint (a generation that died before its checkpoint) are dropped on
    resume, and the resumed search writes the same history as an uninterrupted one."""
    full_store = SearchStore.open(tmp_path / "full.db")
    full = Search(spec(iterations=600), store=full_store, search_id="y").run()
    store = SearchStore.open(tmp_path / "c.db")
    calls = {"n": 0}

    def stop_after_some() -> bool:
        calls["n"] += 1
        return calls["n"] > 20  # ~20 generations of 16: past the checkpoint at 256

    Search(spec(iterations=600), store=store, search_id="y", should_stop=stop_after_some).run()
    cp = store.load("y")
    assert cp is not None and not cp.finished and 0 < cp.n_trials < 600
    stray = [{"search_id": "y", "number": cp.n_trials + i, "state": "complete", "reason": None, "score": -1.0,
              "structure": "[]"} for i in range(5)]
    with store.engine.begin() as c:  # rows a crashed generation left behind, not covered by the checkpoint
        c.execute(search_trials.insert(), stray)
    assert len(store.trials("y")) == cp.n_trials + 5
    again = Search(spec(iterations=600), store=store, search_id="y").run(resume=True)
    assert again.n_trials == 600
    assert history(store, "y") == history(full_store, "y")
    assert again.best_score == full.best_score


def test_nsga2_returns_a_non_dominated_feasible_front(tmp_path: Path) -> None:
    store = SearchStore.open(tmp_path / "n.db")
    r = Search(spec(sampler="nsga2", population=16, iterations=320, objectives=("flops",)), store=store,
               search_id="n").run()
    front = r.pareto_front
    assert len(front) >= 2
    for p in front:
        assert p["flops"] <= 188e8
        for q in front:
            if q is not p:
                assert not (q["score"] >= p["score"] and q["flops"] <= p["flops"]
                            and (q["score"], q["flops"]) != (p["score"], p["flops"]))
    assert _non_dominated(front, ("flops",)) == front
    assert r.best_score == max(p["score"] for p in front)


def test_random_sampler_runs_and_respects_budgets() -> None:
    r = run_search(spec(sampler="random", iterations=200))
    c = costs(r.best_structure, 480, 480)
    assert c.flops <= 188e8 and c.layers <= 91
    assert r.rejected > 0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"population": 1}, "population"),
        ({"iterations": 0}, "iterations"),
        ({"height": 100}, "height"),
        ({"sampler": "bayes"}, "sampler"),
        ({"score": "accuracy"}, "score"),
        ({"budgets": Budgets(flops=-1)}, "budgets.flops"),
        ({"budgets": Budgets(flops=1e6)}, "budgets.flops"),
        ({"space": "nope"}, "space"),
    ],
)
def test_spec_validation_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ZenNASError) as e:
        run_search(spec(**kw))
    assert e.value.field == field


def test_spec_dict_round_trip_and_unknown_field() -> None:
    s = spec(score_settings={"resolution": 64})
    assert SearchSpec.from_dict(s.to_dict()) == s
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({"populaton": 3})
    assert e.value.field == "populaton"


def test_export_opens_as_an_optuna_study(tmp_path: Path) -> None:
    store = SearchStore.open(tmp_path / "e.db")
    Search(spec(iterations=200), store=store, search_id="e").run()
    name = export_optuna(store, "e", tmp_path / "journal.log")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    assert len(study.trials) == 200
    assert study.best_value == pytest.approx(max(r["score"] or -1 for r in store.trials("e")))


@pytest.mark.timeout(600)
def test_a_50k_search_streams_its_history_to_the_store_in_flat_memory(tmp_path: Path) -> None:
    """Every trial of a 50,000-trial search is in the store, numbered without gaps, while the memory
    the search holds stops growing after the first 10,000 trials: no trial history in the process
    (45,000 more trials kept as rows or Optuna trials would add well over 10 MB)."""
    import tracemalloc

    store = SearchStore.open(tmp_path / "h.db")
    held: list[tuple[int, int]] = []  # (trials done, bytes traced), at each progress event

    def on_progress(ev: dict[str, object]) -> None:
        held.append((int(ev["iteration"]), tracemalloc.get_traced_memory()[0]))  # type: ignore[call-overload]

    tracemalloc.start()
    try:
        r = Search(spec(iterations=50_000, population=64, checkpoint_every=2048), store=store, search_id="h",
                   progress=on_progress, progress_interval=0.0).run()
    finally:
        tracemalloc.stop()
    assert r.n_trials == 50_000
    seen, offset = 0, 0
    while True:  # paged, as /trials reads it
        rows = store.trials("h", offset=offset, limit=10_000)
        assert [x["number"] for x in rows] == list(range(offset, offset + len(rows)))
        assert all(isinstance(x["structure"], list) and len(x["structure"]) == 6 for x in rows)  # decoded rows
        seen += len(rows)
        if len(rows) < 10_000:
            break
        offset += 10_000
    assert seen == 50_000
    counts = {s: len(store.trials("h", states=[s])) for s in ("complete", "rejected", "failed")}
    assert (counts["complete"], counts["rejected"], counts["failed"]) == (r.evaluated, r.rejected, r.failed)
    at_10k = max(b for n, b in held if n <= 10_000)
    late = max(b for n, b in held)
    assert late - at_10k < 4 << 20, (at_10k, late)


def test_evolution_sampler_drives_the_same_evolution_from_an_optuna_study() -> None:
    """EvolutionSampler (for users' own Optuna studies) proposes exactly what Evolution proposes with
    generations of one trial, and learns from the values told."""
    from zennas.search import Evolution, EvolutionSampler
    from zennas.search.evaluate import search_evaluator
    from zennas.space.mutation import Mutator

    sp = get_space("detection-k1kxk1")
    ev = search_evaluator(sp.start, 480, 480, score="entropy-analytic", settings={},
                          stage_weights=sp.stage_weights, flops=188e8, layers=91)
    start_score = ev.score(ev(sp.start))

    def pop() -> Population:
        p = Population(8)
        p.seed(sp.start, start_score, 8)
        return p

    sampler = EvolutionSampler(mutator=Mutator(sp, budget_layers=91), population=pop(), seed=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    via_optuna = []
    for _ in range(200):
        t = study.ask()
        s = sampler.candidate(t.number)
        e = ev(s)
        via_optuna.append(s)
        if e.reason is None:
            study.tell(t, ev.score(e))
        else:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    direct = Evolution(mutator=Mutator(sp, budget_layers=91), population=pop(), seed=5)
    for n, expected in enumerate(via_optuna):
        (s,) = direct.propose(range(n, n + 1))
        assert s == expected
        e = ev(s)
        direct.tell(n, s, ev.score(e) if e.reason is None else None)
    assert len(set(via_optuna)) > 100  # a real walk, not the start over and over
