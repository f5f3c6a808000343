"""Search benchmarks: the MAE-DET setting end to end through the driver, against a plain loop.

    python benchmarks/bench_search.py           # seeds 0, 1, 2 (f: 0-4); includes the 1M-iteration runs
    python benchmarks/bench_search.py --quick   # seed 0 only (f: 0-2), no 1M run
    python benchmarks/bench_search.py --only a --only b --only g   # issue 12's figures

a. The MAE-DET setting of tests/data/search.json (detection-k1kxk1, entropy-analytic, 480x480,
   FLOPs <= 188e8, layers <= 91, population 256, 100,000 iterations) through ``run_search`` with a
   SearchStore on a temporary SQLite file (every trial row and the checkpoints written, as a real
   run) and without a store; baseline in the same run: the same algorithm as a plain loop without a
   driver or a store (list population, uniform pick, the search's Mutator and Evaluator, keep the top
   256 by sorting). Interleaved repeats, best of each kept. Best-so-far at 10k / 20k vs the
   reference's curves.
b. Cost growth and peak RSS: 10k, 100k, 1M iterations (seed 0), with and without a store, each in a
   fresh process (``--child N store|none``); then the linearity within one 1M run.
c. Driver overhead per candidate: (driver wall - plain loop wall) / candidates, same run; and the
   driver's phases per candidate from SearchResult.timings.
d. Generation size 1 / 16 / 64 / 512 at 10k iterations: wall time and best score.
e. Forward-pass throughput on 1 vs 2 Ray workers (zennas_workers.RayBackend) and the actor round
   trip vs the in-driver analytic score, when zennas_workers is importable.
f. Search quality at few iterations (issue 3): best score @10k / @20k / @100k per seed for the plain
   algorithm (``warmup_iterations=0``), the default (warm-up: population 16 for the first 10k trials,
   then 256) and each other idea tried: other warm-up sizes, population schedules, a coarse phase
   with 4 mutation rounds, coarse-to-fine (``fine_phase``), restarts, a greedy start. Ideas that are
   SearchSpec fields run through the driver; the others through ``evolve``, a loop that does exactly
   what the driver does (checked here: it reproduces the driver's curve for the default).
g. DAMO-YOLO scale through the service (``zennas serve --dev`` on a fresh SQLite file): population
   512, 500,000 iterations, stage weights [0, 0, 1, 1, 16]; progress polled, the service drained
   (SIGTERM) at 40 % and restarted, the job resumed from its checkpoint to the end, compared with an
   uninterrupted library run; the dispatcher's peak RSS; a /trials page at the end of the history; a
   second job cancelled.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import logging

import optuna
from _common import (
    best_of,
    header,
    load_search_fixture,
    pct,
    ray_backend_available,
    section,
    table,
    verdict,
)

from zennas.search.driver import SearchResult, run_search
from zennas.search.evaluate import search_evaluator
from zennas.search.population import Population
from zennas.search.sampler import trial_rng
from zennas.search.spec import Budgets, SearchSpec
from zennas.search.store import SearchStore
from zennas.space.mutation import Mutator
from zennas.space.space import get_space
from zennas.space.structure import Structure

SPACE = "detection-k1kxk1"
BUDGETS = Budgets(flops=188e8, layers=91)
POPULATION = 256
TARGET_100K_S = 10.0
TARGET_RATIO = 1.3  # driver (store, checkpoints) / plain loop, wall, same run
TARGET_OVERHEAD_MS = 0.05
TARGET_RSS_RATIO = 1.25  # peak RSS after 1M iterations / after 10k

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("zennas").setLevel(logging.WARNING)


def mae_spec(seed: int, iterations: int, *, generation: int = 16, pick: str = "any", **kw: Any) -> SearchSpec:
    """The MAE-DET setting; ``kw``: other SearchSpec fields (warmup_population, fine_phase, ...)."""
    doc = None
    if pick != "any":
        doc = get_space(SPACE).to_dict()
        doc["mutation"]["pick"] = pick
    return SearchSpec(space=SPACE, space_doc=doc, score="entropy-analytic", height=480, width=480,
                      budgets=BUDGETS, population=POPULATION, iterations=iterations, generation=generation,
                      seed=seed, **kw)


@dataclass
class Run:
    wall: float
    result: SearchResult
    progress: list[tuple[int, float]] = field(default_factory=list)  # (trials done, driver seconds)
    cpu: float = 0.0  # this process's CPU time over the run (steadier than wall time under load)


def run_driver(spec: SearchSpec, *, progress: bool = False, store: bool = True) -> Run:
    """One search through the driver, with a fresh SQLite store in a temporary directory (``store``:
    False runs it without one). With ``progress``, the driver's progress events (about one a second)
    are kept as (trials, seconds)."""
    events: list[tuple[int, float]] = []

    def on_progress(ev: dict[str, Any]) -> None:
        events.append((ev["iteration"], ev["elapsed_s"]))

    with tempfile.TemporaryDirectory(prefix="zennas-bench-") as tmp:
        st = SearchStore.open(os.path.join(tmp, "search.db")) if store else None
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        r = run_search(spec, store=st, progress=on_progress if progress else None, progress_interval=1.0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if st is not None:
            st.engine.dispose()
    return Run(wall, r, events, cpu)


def segment_rates(events: list[tuple[int, float]], total: int, parts: int = 10) -> list[tuple[int, int, float]]:
    """(from, to, seconds per 1k trials) over ``parts`` equal slices of the run, from progress events."""
    pts = [(0, 0.0), *events]
    out = []
    for k in range(parts):
        lo, hi = total * k // parts, total * (k + 1) // parts
        a = min(pts, key=lambda p: abs(p[0] - lo))
        b = min(pts, key=lambda p: abs(p[0] - hi))
        if b[0] > a[0]:
            out.append((a[0], b[0], 1e3 * (b[1] - a[1]) / (b[0] - a[0])))
    return out


def best_at(curve: list[tuple[int, float]], n: int) -> float:
    """Best score among the first ``n`` trials (curve: (trials so far, new best))."""
    v = -math.inf
    for k, s in curve:
        if k > n:
            break
        v = s
    return v


def ref_curve(fx: dict[str, Any], which: str, n: int) -> float | None:
    best = fx["reference_search_progress"][which]["best"]
    keys = sorted(int(k) for k in best if int(k) <= n)
    return best[str(keys[-1])][0] if keys else None


# -- the plain-loop baseline -----------------------------------------------------------------------
def _evaluator(space: Any) -> Any:
    return search_evaluator(space.start, 480, 480, score="entropy-analytic", settings={},
                            stage_weights=space.stage_weights, flops=BUDGETS.flops, layers=BUDGETS.layers)


def plain_loop(seed: int, iterations: int, *, pick: str = "any") -> dict[str, Any]:
    """The reference's algorithm without Optuna or a store: list population, uniform pick, mutate,
    budget check, score, deduplicate, keep the top 256 by sorting. Mutation and evaluation are the
    search's own (``Mutator.mutate``, the search's ``Evaluator``)."""
    space = get_space(SPACE)
    if pick != "any":
        doc = space.to_dict()
        doc["mutation"]["pick"] = pick
        space = SearchSpec(space_doc=doc).resolve_space()
    mut = Mutator(space, budget_layers=BUDGETS.layers, height=480, width=480)
    ev = _evaluator(space)
    rng = random.Random(seed)
    start_score = ev.score(ev(space.start))
    pop: list[tuple[float, Structure]] = [(start_score, space.start)] * POPULATION
    members: dict[Structure, int] = {space.start: POPULATION}  # structure -> copies held (deduplication)
    best, curve = start_score, []
    t_mut = t_ev = t_pop = 0.0
    pc = time.perf_counter
    c_start = time.process_time()
    t_start = pc()
    for it in range(iterations):
        t0 = pc()
        child = mut.mutate(pop[rng.randrange(len(pop))][1], rng)
        t1 = pc()
        e = ev(child)
        t2 = pc()
        if e.reason is None and child not in members:
            score = ev.score(e)
            pop.append((score, child))
            pop.sort(key=lambda x: x[0], reverse=True)  # stable: among ties the newest sorts last
            members[child] = 1
            _, out = pop.pop()  # the worst leaves (the child itself if it is not better than the worst)
            if members[out] == 1:
                del members[out]
            else:
                members[out] -= 1
            if score > best:
                best = score
                curve.append((it + 1, score))
        t_pop += pc() - t2
        t_mut += t1 - t0
        t_ev += t2 - t1
    wall = pc() - t_start
    cpu = time.process_time() - c_start
    bs = max(pop, key=lambda x: x[0])[1]
    c = ev(bs)
    return {"wall": wall, "cpu": cpu, "best": best, "curve": curve, "costs": c, "mutate": t_mut, "evaluate": t_ev,
            "population": t_pop}


# -- a driver-faithful loop, for ideas that are not SearchSpec fields --------------------------------
_ENV: dict[str, Any] = {}


def evolve(seed: int, iterations: int, *, size: Callable[[int], int] | None = None,
           rounds: Callable[[int], int] | None = None, fine_from: int | None = None,
           restarts: tuple[int, int, int] | None = None, generation: int = 16) -> list[tuple[int, float]]:
    """The driver's evolution without Optuna or a store, step for step: a generation of
    ``generation`` candidates draws from ``trial_rng(seed, its first trial number)`` and is mutated
    from the population as it was when the generation began, then told in trial order into a
    ``Population``. Returns the best-so-far curve [(trials so far, new best)].

    size(n): the population's capacity when trial n is told (grow-only; the start fills the first one);
    rounds(n): ``Mutator.mutate`` calls for trial n (1 = the space's 2 rounds; 2 = 4 rounds);
    fine_from: trial number from which mutations only change widths;
    restarts (k, length, pop): k independent runs of ``length`` trials with population ``pop`` (trial
    numbers continue from one to the next), whose members then seed the 256-member population that
    runs the remaining trials."""
    if not _ENV:
        space = get_space(SPACE)
        _ENV["space"] = space
        _ENV["mut"] = Mutator(space, budget_layers=BUDGETS.layers, height=480, width=480)
        _ENV["ev"] = _evaluator(space)
    space, mut, ev = _ENV["space"], _ENV["mut"], _ENV["ev"]
    start_score = ev.score(ev(space.start))
    curve: list[tuple[int, float]] = []
    best = start_score

    def run(pop: Population, first: int, last: int, size_at: Callable[[int], int] | None) -> None:
        nonlocal best
        n = first
        while n < last:
            g = min(generation, last - n)
            cands = []
            rng = trial_rng(seed, n)
            for number in range(n, n + g):
                child = pop.pick(rng)
                fine = fine_from is not None and number >= fine_from
                for _ in range(rounds(number) if rounds else 1):
                    child = mut.mutate(child, rng, fine=fine)
                cands.append(child)
            for number, child in enumerate(cands, n):
                if size_at is not None and size_at(number) > pop.size:
                    pop.resize(size_at(number))
                e = ev(child)
                if e.reason is None:
                    score = ev.score(e)
                    pop.insert(child, score)
                    if score > best:
                        best = score
                        curve.append((number + 1, score))
            n += g

    done = 0
    seeded: list[tuple[Structure, float]] = []
    if restarts is not None:
        k, length, small = restarts
        for _ in range(k):
            p = Population(small)
            p.seed(space.start, start_score, small)
            run(p, done, done + length, None)
            seeded += p.items()
            done += length
    size0 = size(0) if size is not None else POPULATION
    pop = Population(size0)
    if seeded:
        for st, sc in sorted(seeded, key=lambda x: -x[1]):  # the restarts' members, best first
            pop.insert(st, sc)
    else:
        pop.seed(space.start, start_score, size0)
    run(pop, done, iterations, size)
    return curve


# -- sections --------------------------------------------------------------------------------------
def fmt_costs(c: Any) -> str:
    if not isinstance(c, dict):
        c = {"flops": c.flops, "params": c.params, "layers": c.layers}
    return f"{c['flops'] / 1e9:.2f} G / {c['params'] / 1e6:.2f} M / {c['layers']}"


def bench_mae(args: argparse.Namespace, fx: dict[str, Any]) -> dict[int, Run]:
    section(f"a. MAE-DET setting, {args.iterations:,} iterations, population 256, generation 16: driver vs plain loop")
    seeds = [0] if args.quick else [0, 1, 2]
    runs: dict[int, Run] = {}  # the driver with a SQLite store (best of the repeats)
    bare: dict[int, Run] = {}  # the driver without a store
    base: dict[int, dict[str, Any]] = {}  # the plain loop
    for seed in seeds:
        for _ in range(args.repeats):  # interleaved, so all three meet the same load; the best of each kept
            b = plain_loop(seed, args.iterations)
            r = run_driver(mae_spec(seed, args.iterations))
            n = run_driver(mae_spec(seed, args.iterations), store=False)
            if seed not in base or b["wall"] < base[seed]["wall"]:
                base[seed] = b
            if seed not in runs or r.wall < runs[seed].wall:
                runs[seed] = r
            if seed not in bare or n.wall < bare[seed].wall:
                bare[seed] = n
    pf10, pf20 = ref_curve(fx, "pick_fixed", 10_000), ref_curve(fx, "pick_fixed", 20_000)
    ap10, ap20 = ref_curve(fx, "as_published", 10_000), ref_curve(fx, "as_published", 20_000)
    rows = []
    for seed in seeds:
        b = base[seed]
        for label, rr in (("driver + SQLite store", runs[seed]), ("driver, no store", bare[seed])):
            r = rr.result
            rows.append([f"{label}, seed {seed}", rr.wall, rr.cpu, rr.wall / b["wall"], rr.cpu / b["cpu"],
                         r.best_score, fmt_costs(r.best_costs), best_at(r.best_curve, 10_000),
                         best_at(r.best_curve, 20_000), f"{r.evaluated}/{r.rejected}"])
        rows.append([f"plain loop, seed {seed}", b["wall"], b["cpu"], 1.0, 1.0, b["best"], fmt_costs(b["costs"]),
                     best_at(b["curve"], 10_000), best_at(b["curve"], 20_000), ""])
    rows.append(["reference, pick fixed (search.json)", None, None, None, None, None, "", pf10, pf20, ""])
    rows.append(["reference, as published (search.json)", None, None, None, None, None, "", ap10, ap20, ""])
    table(["run", "wall s", "CPU s", "x plain (wall)", "x plain (CPU)", "best score",
           "best GFLOPs / Mparams / layers", "best @10k", "best @20k", "scored/rejected"], rows)
    n = args.iterations
    for seed in seeds:
        b, r, nb = base[seed], runs[seed], bare[seed]
        print(f"seed {seed}: driver + store / plain loop = {r.wall / b['wall']:.2f}x wall, {r.cpu / b['cpu']:.2f}x "
              f"CPU (target <= {TARGET_RATIO}x: {verdict(r.wall / b['wall'] <= TARGET_RATIO)} by wall); "
              f"no store / plain = {nb.wall / b['wall']:.2f}x wall, {nb.cpu / b['cpu']:.2f}x CPU; "
              f"no store / store = {nb.wall / r.wall:.2f}x wall "
              f"({verdict(nb.wall <= r.wall)}: no slower without a store)")
    print(f"best of {args.repeats} interleaved repeats each (plain loop, driver + store, driver without store); "
          "the driver's CPU time includes its store-writer thread")
    for seed in seeds:
        r = runs[seed].result
        d10, d20 = best_at(r.best_curve, 10_000), best_at(r.best_curve, 20_000)
        print(f"seed {seed}: best@10k {d10:.1f} ({pct(d10, pf10):+.2f} % vs pick-fixed {pf10}), best@20k {d20:.1f} "
              f"({pct(d20, pf20):+.2f} % vs {pf20}); vs as-published {ap10}/{ap20}: "
              f"{pct(d10, ap10):+.1f} % / {pct(d20, ap20):+.1f} %")
    print("costs are TinyNAS units: FLOPs = MACs + BN/activation element ops at 480x480")

    section("c. driver overhead per candidate: (driver - plain loop) / candidates, same run")
    rows = []
    for seed in seeds:
        b = base[seed]
        for label, rr in (("store", runs[seed]), ("no store", bare[seed])):
            t = rr.result.timings
            rows.append([f"seed {seed}, {label}", n, rr.wall, b["wall"], 1e3 * (rr.wall - b["wall"]) / n,
                         1e3 * (rr.cpu - b["cpu"]) / n, *(1e6 * t[k] / n for k in ("ask", "evaluate", "tell",
                                                                                  "checkpoint"))])
    table(["run", "candidates", "driver wall s", "plain wall s", "overhead ms/cand. (wall)",
           "overhead ms/cand. (CPU)", "propose us/cand. (incl. mutate)", "evaluate us/cand.", "tell us/cand.",
           "checkpoint us/cand."], rows)
    worst = max(r[4] for r in rows)
    print(f"target <= {TARGET_OVERHEAD_MS} ms/candidate: {verdict(worst <= TARGET_OVERHEAD_MS)} (worst {worst:.4f} ms "
          "by wall)")
    pl = base[seeds[0]]
    print(f"plain loop per candidate: mutate {1e6 * pl['mutate'] / n:.1f} us, evaluate {1e6 * pl['evaluate'] / n:.1f}"
          f" us, population {1e6 * pl['population'] / n:.1f} us, total {1e6 * pl['wall'] / n:.1f} us")
    return runs


def _child(argv: list[str]) -> None:
    """``--child N store|none``: one MAE-DET search of N iterations in this (fresh) process; prints
    its wall and CPU seconds, best score and peak RSS as JSON."""
    import json

    n, mode = int(argv[0]), argv[1]
    before = _peak_rss_mib(os.getpid())
    rr = run_driver(mae_spec(0, n), store=mode == "store")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (this script, torch loaded)
    print(json.dumps({"n": n, "store": mode == "store", "wall": rr.wall, "cpu": rr.cpu, "best": rr.result.best_score,
                      "rss_mib": _peak_rss_mib(os.getpid()), "rss_before_mib": before}))


def _in_child(n: int, store: bool) -> dict[str, Any]:
    import json
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--child", str(n), "store" if store else "none"],
                         capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def bench_growth(args: argparse.Namespace, runs: dict[int, Run]) -> None:
    section("b. cost growth and peak memory: 10k, 100k, 1M iterations (seed 0), with and without a store")
    sizes = [10_000, 100_000] + ([] if args.quick else [1_000_000])
    res: dict[tuple[int, bool], dict[str, Any]] = {}
    for n in sizes:
        for store in (True, False):
            res[n, store] = _in_child(n, store)
    rows = []
    for n in sizes:
        for store in (True, False):
            r = res[n, store]
            rows.append([n, "SQLite file" if store else "none", r["wall"], 1e3 * r["wall"] / n, r["cpu"],
                         1e3 * r["cpu"] / n, r["rss_before_mib"], r["rss_mib"],
                         r["rss_mib"] / res[10_000, store]["rss_mib"], r["best"]])
    table(["iterations", "store", "wall s", "wall s per 1k", "CPU s", "CPU s per 1k", "RSS after imports MiB",
           "peak RSS MiB", "peak RSS / at 10k", "best score"], rows)
    print("each run in a fresh process (python " + Path(__file__).name + " --child N store|none): peak RSS is that "
          "search's, including the interpreter and imports")
    top = max(sizes)
    for store in (True, False):
        ratio = res[top, store]["rss_mib"] / res[10_000, store]["rss_mib"]
        print(f"peak RSS at {top:,} / at 10k, {'with' if store else 'without'} a store: {ratio:.2f}x "
              f"(target <= {TARGET_RSS_RATIO}x: {verdict(ratio <= TARGET_RSS_RATIO)})")
    if not args.quick:
        big = run_driver(mae_spec(0, 1_000_000), progress=True)
        n = big.result.n_trials
        print()
        print(f"linearity within a {n:,}-iteration run with a store (driver clock from its progress events):")
        table(["trials from", "to", "s per 1k iterations"], [[a, b, v] for a, b, v in segment_rates(big.progress, n)])


def bench_generation(args: argparse.Namespace) -> None:
    section("d. generation size at 10k iterations")
    seeds = [0] if args.quick else [0, 1, 2]
    rows = []
    for g in (1, 16, 64, 512):
        walls, cpus, bests = [], [], []
        for seed in seeds:
            rr = run_driver(mae_spec(seed, 10_000, generation=g))
            walls.append(rr.wall)
            cpus.append(rr.cpu)
            bests.append(rr.result.best_score)
        rows.append([g, min(walls), statistics.median(walls), min(cpus), statistics.fmean(bests), min(bests),
                     max(bests)])
    table(["generation", "wall s (best)", "wall s (median)", "CPU s (best)", "best score (mean of seeds)", "min",
           "max"], rows)
    print(f"seeds: {', '.join(map(str, seeds))}; a larger generation mutates more candidates from the same "
          "population before any of them can enter it")


CHECKPOINTS = (10_000, 20_000, 100_000)


def bench_ideas(args: argparse.Namespace, fx: dict[str, Any], runs: dict[int, Run]) -> None:
    section("f. search quality at few iterations: what each idea gains (best score @10k / @20k / @100k)")
    seeds = [int(x) for x in args.quality_seeds.split(",")]
    n = max(args.iterations, max(CHECKPOINTS))
    pf10, pf20 = ref_curve(fx, "pick_fixed", 10_000), ref_curve(fx, "pick_fixed", 20_000)
    assert pf10 is not None and pf20 is not None

    def grow(s0: int, until: int) -> Callable[[int], int]:
        return lambda k: s0 if k < until else POPULATION

    def doubling(s0: int, every: int) -> Callable[[int], int]:
        return lambda k: min(POPULATION, s0 << (k // every))

    def linear(s0: int, ramp: int) -> Callable[[int], int]:
        return lambda k: min(POPULATION, s0 + (POPULATION - s0) * k // ramp)

    plain = {"warmup_iterations": 0}
    # (name, how: "driver" with SearchSpec fields, or "loop" with evolve() keywords)
    ideas: list[tuple[str, str, dict[str, Any]]] = [
        ("plain algorithm (warmup_iterations=0)", "driver", plain),
        ("**default**: warm-up, population 16 for 10k trials, then 256", "driver", {}),
        ("warm-up 8 for 10k", "driver", {"warmup_population": 8}),
        ("warm-up 32 for 10k", "driver", {"warmup_population": 32}),
        ("warm-up 16 for 5k", "driver", {"warmup_iterations": 5_000}),
        ("warm-up 16 for 20k", "driver", {"warmup_iterations": 20_000}),
        ("greedy start: warm-up 2 for 10k", "driver", {"warmup_population": 2}),
        ("schedule: 8, doubled every 2k (256 from 10k)", "loop", {"size": doubling(8, 2_000)}),
        ("schedule: 8 growing linearly to 256 over 40k", "loop", {"size": linear(8, 40_000)}),
        ("coarse phase: 4 mutation rounds for 5k, plain", "loop", {"rounds": lambda k: 2 if k < 5_000 else 1}),
        ("coarse phase: 4 rounds for 2k + default warm-up", "loop",
         {"rounds": lambda k: 2 if k < 2_000 else 1, "size": grow(16, 10_000)}),
        ("coarse-to-fine: fine_phase 0.2, plain", "driver", {**plain, "fine_phase": 0.2}),
        ("coarse-to-fine: fine_phase 0.2 + default warm-up", "driver", {"fine_phase": 0.2}),
        ("restarts: 4 x 10k at population 8, then 256", "loop", {"restarts": (4, 10_000, 8)}),
        ("restarts: 8 x 5k at population 16, then 256", "loop", {"restarts": (8, 5_000, 16)}),
    ]
    results: dict[str, dict[int, list[float]]] = {}
    walls: dict[str, list[float]] = {}
    for name, how, kw in ideas:
        results[name], walls[name] = {}, []
        for seed in seeds:
            if how == "driver":
                rr = runs[seed] if (not kw and n == args.iterations and seed in runs) else run_driver(
                    mae_spec(seed, n, **kw))
                curve, wall = rr.result.best_curve, rr.wall
            else:
                t0 = time.perf_counter()
                curve = evolve(seed, n, **kw)
                wall = time.perf_counter() - t0
            results[name][seed] = [best_at(curve, c) for c in CHECKPOINTS]
            walls[name].append(wall)
    base = results[ideas[0][0]]
    rows = []
    for name, how, _ in ideas:
        r = results[name]
        row: list[Any] = [name, how]
        for j, _c in enumerate(CHECKPOINTS):
            row.append(" / ".join(f"{r[sd][j]:.1f}" for sd in seeds))
            row.append(f"{statistics.fmean(r[sd][j] for sd in seeds):.1f} "
                       f"({statistics.fmean(r[sd][j] - base[sd][j] for sd in seeds):+.1f})")
        ok = sum(r[sd][0] >= pf10 and r[sd][1] >= pf20 for sd in seeds)
        row += [f"{ok}/{len(seeds)}", min(walls[name])]
        rows.append(row)
    hdr = ["idea", "run by"]
    for c in CHECKPOINTS:
        hdr += [f"@{c // 1000}k, seeds {','.join(map(str, seeds))}", f"@{c // 1000}k mean (vs plain)"]
    table([*hdr, f"seeds >= {pf10} @10k and {pf20} @20k", f"wall s ({n:,}, best)"], rows)
    print(f"reference (pick fixed, search.json): {pf10} @10k, {pf20} @20k. 'driver' rows are run_search with a "
          "SQLite store (their wall time is the driver's); 'loop' rows are evolve(), the driver's algorithm "
          "without Optuna or a store (its wall time is not comparable)")
    # evolve() must do what the driver does, or the 'loop' rows mean nothing
    d = results[ideas[1][0]]
    same = all(best_at(evolve(sd, 20_000, size=grow(16, 10_000)), c) == d[sd][j]
               for sd in seeds[:2] for j, c in enumerate(CHECKPOINTS[:2]))
    print(f"evolve() reproduces the driver's default curve @10k/@20k (seeds {seeds[:2]}): {'yes' if same else 'NO'}")
    dw = walls[ideas[1][0]]
    print(f"default through the driver, {n:,} iterations: wall {min(dw):.2f}-{max(dw):.2f} s "
          f"(target <= {TARGET_100K_S:.0f} s: {verdict(min(dw) <= TARGET_100K_S)})")


def bench_ray(args: argparse.Namespace) -> None:
    section("e. forward-pass entropy on Ray workers, and the actor round trip")
    ok, why = ray_backend_available()
    if not ok:
        print(f"TODO: zennas_workers.RayBackend is not importable here ({why}); section skipped")
        return
    import ray
    import torch
    from zennas_workers import RayBackend, ray_init

    from zennas.score import make_scorer
    from zennas.search.task import LocalBackend

    space = get_space(SPACE)
    mut = Mutator(space, budget_layers=BUDGETS.layers)
    ev = _evaluator(space)
    rng = random.Random(0)
    pool: list[Structure] = [space.start]
    cands: list[Structure] = []
    while len(cands) < args.ray_candidates:  # feasible candidates of a population-like walk
        s = mut.mutate(pool[rng.randrange(len(pool))], rng)
        if ev(s).reason is None:
            cands.append(s)
            pool.append(s)

    def task(i: int, s: Structure | None, score: str | None) -> dict[str, Any]:
        s = s or space.start
        return {"number": i, "structure": [b.to_dict() for b in s.blocks], "score": score,
                "score_settings": {}, "height": 480, "width": 480, "latency": None,
                "latency_budget_ms": None}

    tasks = [task(i, s, "entropy") for i, s in enumerate(cands)]
    trivial = task(0, None, None)  # no score, no latency: the actor only parses the structure

    local = LocalBackend(threads=1)
    local.evaluate(tasks[:1])
    t_local, local_recs, _ = best_of(lambda: local.evaluate(tasks), args.ray_repeats)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    t_rt_local, _, _ = best_of(lambda: local.evaluate([trivial]), 200)
    torch.set_num_threads(prev)

    ray_init("local", num_cpus=2)
    rows = [["in-process LocalBackend (1 thread)", len(tasks), t_local, len(tasks) / t_local, None]]
    rates: dict[int, float] = {}
    rt: dict[str, float] = {}
    try:
        for w in (1, 2):
            b = RayBackend(num_workers=w, threads=1)
            try:
                b.evaluate([dict(trivial, number=i) for i in range(w)])  # start the actors
                b.evaluate(tasks[:w])  # build the scorer on each actor
                dt, recs, _ = best_of(lambda b=b: b.evaluate(tasks), args.ray_repeats)
                assert all(r["state"] == "complete" for r in recs), [r["reason"] for r in recs][:3]
                same = all(abs(a["score"] - c["score"]) < 1e-6 * abs(c["score"]) for a, c in zip(recs, local_recs,
                                                                                                   strict=True))
                rates[w] = len(tasks) / dt
                rows.append([f"RayBackend, {w} worker(s), 1 thread each", len(tasks), dt, rates[w],
                             "yes" if same else "NO"])
                if w == 1:
                    rt["single"], _, _ = best_of(lambda b=b: b.evaluate([trivial]), 200, warmup=10)
                    t16, _, _ = best_of(lambda b=b: b.evaluate([dict(trivial, number=i) for i in range(16)]), 30,
                                        warmup=2)
                    rt["batch16"] = t16 / 16
            finally:
                b.close()
        b = RayBackend(num_workers=1, threads=1, in_flight=4)  # pipelined: up to 4 tasks queued per actor
        try:
            b.evaluate([trivial])
            t16, _, _ = best_of(lambda: b.evaluate([dict(trivial, number=i) for i in range(16)]), 30, warmup=2)
            rt["batch16_pipelined"] = t16 / 16
        finally:
            b.close()
    finally:
        ray.shutdown()
    print(f"{len(tasks)} feasible candidates of a population-like walk from the MAE-DET start; entropy at "
          "its default settings (128x128, circular padding, batch 1, repeat 1); best of"
          f" {args.ray_repeats} passes; actors "
          "started and warmed before timing")
    table(["backend", "candidates", "s", "candidates/s", "scores equal local"], rows)
    if 1 in rates and 2 in rates:
        print(f"scaling 1 -> 2 workers: {rates[2] / rates[1]:.2f}x, efficiency {rates[2] / (2 * rates[1]):.0%} "
              "(2 cores shared with the driver and other processes)")

    # the crossover
    an = make_scorer("entropy-analytic")
    n = 20_000
    t_an_ev, _, _ = best_of(lambda: [ev(s) for s in cands * (n // len(cands))], 3)
    t_an_ev /= (n // len(cands)) * len(cands)
    t_an_sc, _, _ = best_of(lambda: [an(s) for s in cands * 50], 3)
    t_an_sc /= 50 * len(cands)
    t_fw = t_local / len(tasks)
    print()
    table(["cost per candidate", "seconds", "us"], [
        ["entropy-analytic in the driver (the search's Evaluator, warm caches)", t_an_ev, 1e6 * t_an_ev],
        ["entropy-analytic scorer (make_scorer, ScoreResult)", t_an_sc, 1e6 * t_an_sc],
        ["in-process trivial task (LocalBackend, parse only)", t_rt_local, 1e6 * t_rt_local],
        ["Ray actor round trip, 1 trivial task per evaluate()", rt["single"], 1e6 * rt["single"]],
        ["Ray actor round trip, per task in a batch of 16 (in_flight=1, default)", rt["batch16"],
         1e6 * rt["batch16"]],
        ["Ray actor round trip, per task in a batch of 16 (in_flight=4)", rt["batch16_pipelined"],
         1e6 * rt["batch16_pipelined"]],
        ["forward-pass entropy, default settings (LocalBackend, 1 thread)", t_fw, 1e6 * t_fw],
    ])
    print(f"round trip / analytic: {rt['single'] / t_an_ev:,.0f}x; forward-pass / round trip: "
          f"{t_fw / rt['single']:,.0f}x")


DAMO_WEIGHTS = [0.0, 0.0, 1.0, 1.0, 16.0]  # DAMO-YOLO's TinyNAS configs


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (the process's peak resident set so far) from /proc, NaN once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_damo(args: argparse.Namespace) -> None:
    n = args.damo_iterations
    section(f"g. DAMO-YOLO scale through the service: population 512, {n:,} iterations, stage weights "
            f"{DAMO_WEIGHTS}, drained and resumed once, then a second job cancelled")
    import signal

    import httpx
    from bench_api import Server

    body = {"space": SPACE, "score": "entropy-analytic", "score_settings": {"stage_weights": DAMO_WEIGHTS},
            "resolution": 480, "budgets": {"flops": BUDGETS.flops, "layers": BUDGETS.layers}, "population": 512,
            "iterations": n, "generation": 16, "seed": 0}
    events: list[tuple[float, int]] = []  # (seconds since submit, iteration) as polled
    rss: list[float] = []  # the dispatchers' peak RSS (MiB), before the drain and after the resume
    with tempfile.TemporaryDirectory(prefix="zennas-damo-") as tmp:
        work = Path(tmp)
        srv = Server(work, settings={"max_iterations": str(max(n, 2_000_000))})
        try:
            c = httpx.Client(base_url=srv.url, timeout=60)
            t0 = time.perf_counter()
            jid = c.post("/v1/searches", json=body).raise_for_status().json()["id"]
            disp = _children(srv.proc.pid)
            while True:  # run to ~40 %, then drain the service (SIGTERM): the search checkpoints
                j = c.get(f"/v1/searches/{jid}").json()
                it = (j.get("progress") or {}).get("iteration", 0)
                events.append((time.perf_counter() - t0, it))
                if it >= 0.4 * n:
                    drained_at = it
                    break
                time.sleep(0.5)
            rss.append(max(_peak_rss_mib(p) for p in disp))
            t_drain = time.perf_counter()
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(timeout=120)
            drain_s = time.perf_counter() - t_drain
        finally:
            srv.stop()
        srv = Server(work, settings={"max_iterations": str(max(n, 2_000_000))})  # same database: resumes
        try:
            c = httpx.Client(base_url=srv.url, timeout=60)
            t_restart = time.perf_counter()
            disp = _children(srv.proc.pid)
            resumed_at = None
            while True:
                j = c.get(f"/v1/searches/{jid}").json()
                it = (j.get("progress") or {}).get("iteration", 0)
                if resumed_at is None and j["state"] == "running":
                    resumed_at = it
                events.append((time.perf_counter() - t0, it))
                if j["state"] in ("succeeded", "failed", "cancelled"):
                    break
                rss_now = max(_peak_rss_mib(p) for p in disp)
                time.sleep(0.5)
            total_s = time.perf_counter() - t0
            second_run_s = time.perf_counter() - t_restart
            rss.append(rss_now)
            result = j.get("result") or {}
            t_page = time.perf_counter()
            page = c.get(f"/v1/searches/{jid}/trials", params={"offset": n - 1000, "limit": 1000}).json()
            page_s = time.perf_counter() - t_page
            # cancel: a second job of the same size, cancelled once it reports progress
            jid2 = c.post("/v1/searches", json={**body, "seed": 1}).raise_for_status().json()["id"]
            while not (c.get(f"/v1/searches/{jid2}").json().get("progress") or {}).get("iteration"):
                time.sleep(0.2)
            t_cancel = time.perf_counter()
            c.post(f"/v1/searches/{jid2}/cancel").raise_for_status()
            while (j2 := c.get(f"/v1/searches/{jid2}").json())["state"] not in ("cancelled", "succeeded", "failed"):
                time.sleep(0.1)
            cancel_s = time.perf_counter() - t_cancel
        finally:
            srv.stop()
    ref = run_search(SearchSpec(space=SPACE, score="entropy-analytic", score_settings={"stage_weights": DAMO_WEIGHTS},
                                height=480, width=480, budgets=BUDGETS, population=512, iterations=n, seed=0))
    best = (result.get("best") or {})
    same = best.get("score") == ref.best_score and best.get("structure") == ref.best_structure.to_dict()
    table(["what", "value"], [
        ["job state", j["state"]],
        ["trials", (result.get("counts") or {}).get("trials")],
        ["best score", best.get("score")],
        ["search seconds (driver clock, both runs)", result.get("seconds")],
        ["wall s, submit -> succeeded (incl. drain + restart)", total_s],
        ["iteration seen before the drain / first seen running after the restart", f"{drained_at:,} / {resumed_at}"],
        ["drain (SIGTERM -> server exited) s", drain_s],
        ["second run (restart -> succeeded) s", second_run_s],
        ["dispatcher peak RSS MiB, first run / resumed run", f"{rss[0]:.0f} / {rss[1]:.0f}"],
        [f"GET /trials?offset={n - 1000}&limit=1000: rows / s", f"{len(page.get('items', []))} / {page_s:.3f}"],
        ["second job: cancel -> state", f"{j2['state']} in {cancel_s:.2f} s"],
        ["resumed result == uninterrupted library run (score and structure)", "yes" if same else "NO"],
    ])
    print(f"uninterrupted library run (run_search, no store): best {ref.best_score}, {ref.seconds:.1f} s")
    print("progress as polled (s since submit, iteration): " + ", ".join(
        f"({t:.0f}, {i:,})" for t, i in events[:: max(1, len(events) // 12)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, no 1M-iteration run")
    p.add_argument("--only", choices=("a", "b", "c", "d", "e", "f", "g"), action="append",
                   help="sections to run (c always comes with a)")
    p.add_argument("--iterations", type=int, default=100_000, help="iterations of the section-a runs")
    p.add_argument("--quality-seeds", default="0,1,2,3,4", help="seeds of section f (--quick: 0,1,2)")
    p.add_argument("--ray-candidates", type=int, default=64)
    p.add_argument("--ray-repeats", type=int, default=2, help="repeats of each 64-candidate pass (best kept)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of section a's runs (best kept)")
    p.add_argument("--damo-iterations", type=int, default=500_000, help="iterations of section g's search")
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
        return
    args = p.parse_args()
    header("bench_search")
    fx = load_search_fixture()
    only = set(args.only or ("a", "b", "c", "d", "e", "f", "g"))
    if args.quick and args.quality_seeds == p.get_default("quality_seeds"):
        args.quality_seeds = "0,1,2"
    runs: dict[int, Run] = {}
    if only & {"a", "c"}:
        runs = bench_mae(args, fx)
    if "b" in only:
        bench_growth(args, runs)
    if "d" in only:
        bench_generation(args)
    if "e" in only:
        bench_ray(args)
    if "f" in only:
        bench_ideas(args, fx, runs)
    if "g" in only:
        bench_damo(args)


if __name__ == "__main__":
    main()
