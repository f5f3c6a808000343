"""The optimality certificate: bound and gap of 100k-iteration searches, and what the bound costs.

    python benchmarks/bench_bound.py            # three budgets, seeds 0 and 1, 100k iterations
    python benchmarks/bench_bound.py --quick    # 20k iterations, seed 0
    python benchmarks/bench_bound.py --cost-only  # what the bound costs, no searches

Each search runs through ``run_search`` (the path users run): it computes its certificate itself, so
the figures below are the result's own ``bound``, ``gap_pct`` and ``certificate``. The bound's cost is
timed separately with ``zennas.search.bound.bound`` in a fresh state (cold: the cost tables are built
from ``block_cost``; warm: they are cached in the process) against the search's own time in the same run.
"""

from __future__ import annotations

import argparse
import time

import optuna
from _common import header, section

from zennas.search import Budgets, SearchSpec, run_search
from zennas.search import bound as bound_mod
from zennas.space.space import get_space

SETTINGS = [  # (label, space, FLOPs, layers)
    ("MAE-DET (start structure, 188e8 FLOPs at 480, 91 layers)", "detection-k1kxk1", 188e8, 91),
    ("100e8 FLOPs at 480, 91 layers", "detection-k1kxk1", 100e8, 91),
    ("300e8 FLOPs at 480, 120 layers", "detection-k1kxk1", 300e8, 120),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cost-only", action="store_true", help="section a only")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    iters = 20_000 if args.quick else 100_000
    seeds = (0,) if args.quick else (0, 1)
    header("bound and gap (zennas.search.bound)")
    section("a. What the bound costs (MAE-DET setting)")
    space = get_space("detection-k1kxk1")
    bound_mod._slices.cache_clear()
    bound_mod._ob_slices.cache_clear()
    t0, c0 = time.perf_counter(), time.process_time()
    cold = bound_mod.bound(space, budget_flops=188e8, budget_layers=91, height=480)
    t_cold, c_cold = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    warm = bound_mod.bound(space, budget_flops=188e8, budget_layers=91, height=480)
    t_warm, c_warm = time.perf_counter() - t0, time.process_time() - c0
    assert warm.bound == cold.bound
    print(f"cold (tables from block_cost + {cold.evaluations} programme solves): {t_cold:.2f} s wall, "
          f"{c_cold:.2f} CPU s; warm (cached tables, {warm.evaluations} solves): {t_warm:.2f} s wall, "
          f"{c_warm:.2f} CPU s ({c_warm / warm.evaluations:.3f} CPU s per solve)")
    if args.cost_only:
        return
    section(f"b. Bound and gap, {iters:,} iterations, population 256, seeds {', '.join(map(str, seeds))}")
    print("| setting | bound | programme's feasible structure | evolution's best | gap % | search s | bound s |")
    print("|---|---|---|---|---|---|---|")
    for label, name, flops, layers in SETTINGS:
        bound_mod._cached_bound.cache_clear()  # each search pays for its own certificate (tables stay warm)
        for seed in seeds:
            spec = SearchSpec(space=name, budgets=Budgets(flops=flops, layers=layers), iterations=iters, seed=seed)
            t0 = time.perf_counter()
            r = run_search(spec)
            wall = time.perf_counter() - t0
            c = r.certificate
            assert c is not None and c["available"]
            evo = c["search_best"]
            print(f"| {label}, seed {seed} | {c['bound']:.3f} | {c['score']:.3f} | {evo:.3f} | "
                  f"{100 * (c['bound'] - evo) / c['bound']:.3f} "
                  f"{'(returned: programme, gap ' + format(r.gap_pct, '.3f') + ')' if c.get('best_from') else ''} | "
                  f"{wall - c['seconds']:.1f} | {c['seconds']:.1f} |")
            bound_mod._cached_bound.cache_clear()


if __name__ == "__main__":
    main()
