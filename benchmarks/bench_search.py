"""Search benchmarks: the MAE-DET setting end to end through the Optuna driver.

    python benchmarks/bench_search.py           # seeds 0, 1, 2 (f: 0-4); includes the 1M-iteration run
    python benchmarks/bench_search.py --quick   # seed 0 only (f: 0-2), no 1M run
    python benchmarks/bench_search.py --only f  # the search-quality table only (~8 min on 2 busy cores)

a. The MAE-DET setting of tests/data/search.json (detection-k1kxk1, entropy-analytic, 480x480,
   FLOPs <= 188e8, layers <= 91, population 256, 100,000 iterations) through ``run_search`` with a
   SearchStore on a temporary SQLite file (trial rows and checkpoints written, as a real run): wall
   time, best score and its costs, best-so-far at 10k / 20k vs the reference's curves. Baseline in
   the same run: the same algorithm as a plain loop without Optuna or a store (list population,
   uniform pick, zennas Mutator, DriverEvaluator, keep the top 256 by sorting). Also ``pick:
   reference`` (the reference's block-pick quirk) through the driver.
b. Cost growth: 10k, 100k, 1M iterations (seed 0): seconds per 1k iterations.
c. Driver overhead per candidate: (wall - time in the evaluate phase) / trials, from
   SearchResult.timings.
d. Generation size 1 / 16 / 64 / 512 at 10k iterations: wall time and best score.
e. Forward-pass throughput on 1 vs 2 Ray workers (zennas_workers.RayBackend) and the actor round
   trip vs the in-driver analytic score, when zennas_workers is importable.
f. Search quality at few iterations (issue 3): best score @10k / @20k / @100k per seed for the plain
   algorithm (``warmup_iterations=0``), the default (warm-up: population 16 for the first 10k trials,
   then 256) and each other idea tried: other warm-up sizes, population schedules, a coarse phase
   with 4 mutation rounds, coarse-to-fine (``fine_phase``), restarts, a greedy start. Ideas that are
   SearchSpec fields run through the driver; the others through ``evolve``, a loop that does exactly
   what the driver does (checked here: it reproduces the driver's curve for the default).
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
from zennas.search.evaluate import DriverEvaluator
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
TARGET_1M_S = 100.0
TARGET_OVERHEAD_MS = 0.1

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


def run_driver(spec: SearchSpec, *, progress: bool = False) -> Run:
    """One search through the driver, with a fresh SQLite store in a temporary directory. With
    ``progress``, the driver's progress events (about one a second) are kept as (trials, seconds)."""
    events: list[tuple[int, float]] = []

    def on_progress(ev: dict[str, Any]) -> None:
        events.append((ev["iteration"], ev["elapsed_s"]))

    with tempfile.TemporaryDirectory(prefix="zennas-bench-") as tmp:
        store = SearchStore.open(os.path.join(tmp, "search.db"))
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        r = run_search(spec, store=store, progress=on_progress if progress else None, progress_interval=1.0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.engine.dispose()
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
def plain_loop(seed: int, iterations: int, *, pick: str = "any") -> dict[str, Any]:
    """The reference's algorithm without Optuna or a store: list population, uniform pick, mutate,
    budget check, score, deduplicate, keep the top 256 by sorting."""
    space = get_space(SPACE)
    if pick != "any":
        doc = space.to_dict()
        doc["mutation"]["pick"] = pick
        space = SearchSpec(space_doc=doc).resolve_space()
    mut = Mutator(space, budget_layers=BUDGETS.layers, height=480, width=480)
    ev = DriverEvaluator(space.start, 480, 480, BUDGETS, space.stage_weights)
    rng = random.Random(seed)
    start_score = ev.analytic(space.start)
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
        c, score = ev.evaluate(child)
        bad = ev.violated(c)
        t2 = pc()
        if bad is None and child not in members:
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
    c = ev.costs(bs)
    return {"wall": wall, "cpu": cpu, "best": best, "curve": curve, "costs": c, "mutate": t_mut, "evaluate": t_ev,
            "population": t_pop}


# -- a driver-faithful loop, for ideas that are not SearchSpec fields --------------------------------
_ENV: dict[str, Any] = {}


def evolve(seed: int, iterations: int, *, size: Callable[[int], int] | None = None,
           rounds: Callable[[int], int] | None = None, fine_from: int | None = None,
           restarts: tuple[int, int, int] | None = None, generation: int = 16) -> list[tuple[int, float]]:
    """The driver's evolution without Optuna or a store, step for step: trial n draws from
    ``trial_rng(seed, n)``, a generation of ``generation`` candidates is mutated from the population as
    it was when the generation began, then told in trial order into a ``Population``. Returns the
    best-so-far curve [(trials so far, new best)].

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
        _ENV["ev"] = DriverEvaluator(space.start, 480, 480, BUDGETS, space.stage_weights)
    space, mut, ev = _ENV["space"], _ENV["mut"], _ENV["ev"]
    start_score = ev.analytic(space.start)
    curve: list[tuple[int, float]] = []
    best = start_score

    def run(pop: Population, first: int, last: int, size_at: Callable[[int], int] | None) -> None:
        nonlocal best
        n = first
        while n < last:
            g = min(generation, last - n)
            cands = []
            for number in range(n, n + g):
                rng = trial_rng(seed, number)
                child = pop.pick(rng)
                fine = fine_from is not None and number >= fine_from
                for _ in range(rounds(number) if rounds else 1):
                    child = mut.mutate(child, rng, fine=fine)
                cands.append(child)
            for number, child in enumerate(cands, n):
                if size_at is not None and size_at(number) > pop.size:
                    pop.resize(size_at(number))
                c, score = ev.evaluate(child)
                if ev.violated(c) is None:
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
    section("a. MAE-DET setting, 100,000 iterations, population 256, generation 16, SQLite store")
    seeds = [0] if args.quick else [0, 1, 2]
    runs: dict[int, Run] = {}
    base: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        runs[seed] = run_driver(mae_spec(seed, args.iterations))
        base[seed] = plain_loop(seed, args.iterations)
    pf10, pf20 = ref_curve(fx, "pick_fixed", 10_000), ref_curve(fx, "pick_fixed", 20_000)
    ap10, ap20 = ref_curve(fx, "as_published", 10_000), ref_curve(fx, "as_published", 20_000)
    rows = []
    for seed in seeds:
        r = runs[seed].result
        b = base[seed]
        rows.append([f"driver (Optuna + store), seed {seed}", runs[seed].wall, runs[seed].cpu, r.best_score,
                     fmt_costs(r.best_costs), best_at(r.best_curve, 10_000), best_at(r.best_curve, 20_000),
                     f"{r.evaluated}/{r.rejected}"])
        rows.append([f"plain loop, seed {seed}", b["wall"], b["cpu"], b["best"], fmt_costs(b["costs"]),
                     best_at(b["curve"], 10_000), best_at(b["curve"], 20_000), ""])
    rows.append(["reference, pick fixed (search.json)", None, None, None, "", pf10, pf20, ""])
    rows.append(["reference, as published (search.json)", None, None, None, "", ap10, ap20, ""])
    table(["run", "wall s", "CPU s", "best score", "best GFLOPs / Mparams / layers", "best @10k", "best @20k",
           "scored/rejected"], rows)
    walls = [runs[s].wall for s in seeds]
    cpus = [runs[s].cpu for s in seeds]
    bwalls = [base[s]["wall"] for s in seeds]
    bcpus = [base[s]["cpu"] for s in seeds]
    print(f"driver wall: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s; plain loop: best "
          f"{min(bwalls):.2f} s -> driver / plain = {min(walls) / min(bwalls):.2f}x (wall), "
          f"{min(cpus) / min(bcpus):.2f}x (CPU: {min(cpus):.2f} s vs {min(bcpus):.2f} s)")
    print(f"target 100k iterations <= {TARGET_100K_S:.0f} s: {verdict(min(walls) <= TARGET_100K_S)} by wall "
          f"(best {min(walls):.2f} s, all {', '.join(f'{w:.2f}' for w in walls)}), "
          f"{verdict(min(cpus) <= TARGET_100K_S)} by CPU time (best {min(cpus):.2f} s)")
    for seed in seeds:
        r = runs[seed].result
        d10, d20 = best_at(r.best_curve, 10_000), best_at(r.best_curve, 20_000)
        print(f"seed {seed}: best@10k {d10:.1f} ({pct(d10, pf10):+.2f} % vs pick-fixed {pf10}), best@20k {d20:.1f} "
              f"({pct(d20, pf20):+.2f} % vs {pf20}); vs as-published {ap10}/{ap20}: "
              f"{pct(d10, ap10):+.1f} % / {pct(d20, ap20):+.1f} %")
    print("costs are TinyNAS units: FLOPs = MACs + BN/activation element ops at 480x480")

    print()
    print("pick: reference (the reference's exclusive upper bound: the last block is never picked directly)")
    rows = []
    for seed in seeds:
        rr = run_driver(mae_spec(seed, args.iterations, pick="reference"))
        r = rr.result
        rows.append([f"driver, pick reference, seed {seed}", rr.wall, rr.cpu, r.best_score, fmt_costs(r.best_costs),
                     best_at(r.best_curve, 10_000), best_at(r.best_curve, 20_000),
                     r.best_structure.blocks[-1].out_channels, r.best_structure.blocks[-1].layers])
    for seed in seeds:
        r = runs[seed].result
        rows.append([f"driver, pick any, seed {seed}", runs[seed].wall, runs[seed].cpu, r.best_score, fmt_costs(r.best_costs),
                     best_at(r.best_curve, 10_000), best_at(r.best_curve, 20_000),
                     r.best_structure.blocks[-1].out_channels, r.best_structure.blocks[-1].layers])
    rows.append(["reference, as published (search.json, at 32,500)", None, None,
                 fx["reference_search_progress"]["as_published"]["best"]["32500"][0], "18.73 G / - / 76", ap10, ap20,
                 None, None])
    table(["run", "wall s", "CPU s", "best score", "best GFLOPs / Mparams / layers", "best @10k", "best @20k",
           "last block out", "last block units"], rows)

    section("c. driver overhead per candidate (from SearchResult.timings)")
    rows = []
    for seed in seeds:
        r = runs[seed].result
        t = r.timings
        n = r.n_trials
        over = (runs[seed].wall - t["evaluate"]) / n
        load = runs[seed].cpu / runs[seed].wall  # share of the wall time this process was on a core
        rows.append([f"seed {seed}", n, runs[seed].wall, runs[seed].cpu, *(1e6 * t[k] / n for k in (
                     "ask", "evaluate", "tell", "checkpoint")), 1e6 * base[seed]["mutate"] / args.iterations,
                     1e3 * over, 1e3 * over * min(1.0, load)])
    table(["run", "trials", "wall s", "CPU s", "ask us/trial (incl. mutate)", "evaluate us/trial", "tell us/trial",
           "checkpoint us/trial", "plain-loop mutate us/cand.", "overhead ms/cand. (wall)",
           "overhead ms/cand. (x CPU/wall)"], rows)
    best_over = min(r[-2] for r in rows)
    best_over_cpu = min(r[-1] for r in rows)
    print("overhead = (wall - evaluate phase) / trials; the evaluate phase is costs + budget check + "
          "entropy-analytic; ask includes the mutation itself (plain-loop column: its share)")
    print("the last column scales the wall-clock overhead by the run's CPU/wall ratio (time actually on a core)")
    print(f"target <= {TARGET_OVERHEAD_MS} ms: {verdict(best_over <= TARGET_OVERHEAD_MS)} by wall (best "
          f"{best_over:.4f} ms), {verdict(best_over_cpu <= TARGET_OVERHEAD_MS)} CPU-scaled ({best_over_cpu:.4f} ms)")
    pl = base[seeds[0]]
    n = args.iterations
    print(f"plain loop per candidate: mutate {1e6 * pl['mutate'] / n:.1f} us, evaluate {1e6 * pl['evaluate'] / n:.1f}"
          f" us, population {1e6 * pl['population'] / n:.1f} us, total {1e6 * pl['wall'] / n:.1f} us")
    return runs


def bench_growth(args: argparse.Namespace, runs: dict[int, Run]) -> None:
    section("b. cost growth (seed 0, generation 16, checkpoint_every default)")
    rows = []
    sizes = [10_000, args.iterations] + ([] if args.quick else [1_000_000])
    big: Run | None = None
    for n in sizes:
        if n <= 10_000:
            rs = [run_driver(mae_spec(0, n)) for _ in range(3)]
            walls = [x.wall for x in rs]
            cpu = min(x.cpu for x in rs)
            r = rs[0].result
            note = "best of 3"
        else:
            rr = run_driver(mae_spec(0, n), progress=True)
            r, walls, cpu = rr.result, [rr.wall], rr.cpu
            note = "once, progress events on (1/s)"
            big = rr
        w = min(walls)
        rows.append([n, w, 1e3 * w / n, cpu, 1e3 * cpu / n, r.best_score, note])
    table(["iterations", "wall s", "wall s per 1k iterations", "CPU s", "CPU s per 1k iterations", "best score",
           "note"], rows)
    try:
        import resource

        print(f"peak RSS of this process so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    except ImportError:  # pragma: no cover - not on Linux
        pass
    if big is not None and big.progress:
        n = big.result.n_trials
        print()
        print(f"linearity within the {n:,}-iteration run (driver clock from its progress events):")
        table(["trials from", "to", "s per 1k iterations"], [[a, b, v] for a, b, v in segment_rates(big.progress, n)])
    if not args.quick:
        w1m, c1m = rows[-1][1], rows[-1][3]
        print(f"target 1M iterations <= {TARGET_1M_S:.0f} s: {verdict(w1m <= TARGET_1M_S)} by wall ({w1m:.1f} s), "
              f"{verdict(c1m <= TARGET_1M_S)} by CPU time ({c1m:.1f} s)")


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
    ev = DriverEvaluator(space.start, 480, 480, BUDGETS, space.stage_weights)
    rng = random.Random(0)
    pool: list[Structure] = [space.start]
    cands: list[Structure] = []
    while len(cands) < args.ray_candidates:  # feasible candidates of a population-like walk
        s = mut.mutate(pool[rng.randrange(len(pool))], rng)
        c, _ = ev.evaluate(s)
        if ev.violated(c) is None:
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
    t_an_ev, _, _ = best_of(lambda: [ev.evaluate(s) for s in cands * (n // len(cands))], 3)
    t_an_ev /= (n // len(cands)) * len(cands)
    t_an_sc, _, _ = best_of(lambda: [an(s) for s in cands * 50], 3)
    t_an_sc /= 50 * len(cands)
    t_fw = t_local / len(tasks)
    print()
    table(["cost per candidate", "seconds", "us"], [
        ["entropy-analytic in the driver (DriverEvaluator.evaluate, warm caches)", t_an_ev, 1e6 * t_an_ev],
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, no 1M-iteration run")
    p.add_argument("--only", choices=("a", "b", "c", "d", "e", "f"), action="append",
                   help="sections to run (c always comes with a)")
    p.add_argument("--iterations", type=int, default=100_000, help="iterations of the section-a runs")
    p.add_argument("--quality-seeds", default="0,1,2,3,4", help="seeds of section f (--quick: 0,1,2)")
    p.add_argument("--ray-candidates", type=int, default=64)
    p.add_argument("--ray-repeats", type=int, default=2, help="repeats of each 64-candidate pass (best kept)")
    args = p.parse_args()
    header("bench_search")
    fx = load_search_fixture()
    only = set(args.only or ("a", "b", "c", "d", "e", "f"))
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


if __name__ == "__main__":
    main()
