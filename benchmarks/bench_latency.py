"""Latency profiles: build time, predictor accuracy, and the speed of a latency-budgeted search.

    python benchmarks/bench_latency.py                                  # build, check 200, search 100k
    python benchmarks/bench_latency.py --profile cpu1.json              # reuse a built profile
    python benchmarks/bench_latency.py --structures 50 --iterations 20000 --measured 8

a. Profile build (``zennas.latency.build_profile``, what ``zennas profile build`` runs): wall time,
   cells measured / estimated, document size. With ``--profile`` the recorded build time is reported.
b. Predictor accuracy (``check_profile``, what ``zennas profile check`` runs): the space's start plus
   N random-walk structures, each measured whole in the profile's runtime: share within +-10 %, MAPE,
   Kendall tau, the worst cases.
c. Search speed, the MAE-DET setting (detection-k1kxk1, entropy-analytic, FLOPs <= 188e8 scaled to
   the resolution, layers <= 91, population 256): the FLOPs-only search (the baseline, same run); the
   winner's measured latency L; the predicted search with budget 0.9 L, end to end with its top-k
   verification; the measured mode's seconds per candidate (``LocalBackend`` timing each candidate's
   torch backbone, the existing ``--budget-latency-ms`` path) on ``--measured`` candidates and the
   extrapolated wall time of the same iterations.
d. What the user gets: the latency-budgeted winner vs the FLOPs-budgeted winner, measured latency and
   entropy score.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
from _common import machine

from zennas.latency import BuildSpec, build_profile, check_profile, load_profile
from zennas.latency.runtimes import Runner, TimingSettings
from zennas.latency.sample import sample_structures
from zennas.search import Budgets, LatencySpec, Search, SearchSpec
from zennas.search.task import LocalBackend
from zennas.space.space import get_space


def section_build(args: argparse.Namespace) -> Path:
    if args.profile:
        p = load_profile(args.profile)
        print(f"\n## a. Profile (given: {args.profile})\n")
        path = Path(args.profile)
    else:
        path = Path(tempfile.mkdtemp(prefix="bench-latency-")) / f"{args.runtime}.json"
        t0 = time.perf_counter()
        p = build_profile(BuildSpec(runtime=args.runtime, threads=1, batch=1, height=args.resolution,
                                    width=args.resolution, space=args.space, clock=args.clock),
                          save=lambda q: q.save(path))
        print(f"\n## a. Profile build (this run: {time.perf_counter() - t0:.1f} s wall)\n")
    cells, measured, estimated = p.n_cells()
    print("| runtime | clock | resolution | tables | cells | measured | estimated | build s | size KB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {p.fingerprint.runtime_version} | {p.clock} | {p.height} | {len(p.tables)} | {cells} | {measured} | "
          f"{estimated} | "
          f"{p.build_seconds:.0f} | {path.stat().st_size / 1024:.0f} |")
    assert p.overhead is not None
    print(f"\noverhead fit: scale {p.overhead.scale:.3f}, per op {p.overhead.per_op_ms * 1e3:.1f} us, "
          f"per MB of activations {p.overhead.per_mb_ms or 0.0:+.4f} ms, "
          f"offset {p.overhead.offset_ms:.2f} ms on {len(p.overhead.calibration)} networks")
    return path


def section_accuracy(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    p = load_profile(path)
    space = get_space(p.space)
    todo = [space.start, *sample_structures(space, args.structures, seed=args.seed, height=p.height,
                                            width=p.width, max_flops=p.settings.get("max_flops"))]
    t0 = time.perf_counter()
    rep = check_profile(p, todo, runs=args.runs)
    wall = time.perf_counter() - t0
    print(f"\n## b. Predictor accuracy ({rep.n} structures, {p.runtime} 1 thread batch 1 at {p.height}; "
          f"{wall:.0f} s)\n")
    print("| n | within +-10 % | MAPE | Kendall tau | measured ms (min / median / max) |")
    print("|---|---|---|---|---|")
    ms = sorted(r.measured_ms for r in rep.rows)
    print(f"| {rep.n} | {100 * rep.within_10pct:.1f} % | {100 * rep.mape:.2f} % | {rep.kendall_tau:.3f} | "
          f"{ms[0]:.1f} / {ms[len(ms) // 2]:.1f} / {ms[-1]:.1f} |")
    print("\nworst: " + ", ".join(f"#{i} {r.predicted_ms:.1f} vs {r.measured_ms:.1f} ms ({100 * r.error:+.1f} %)"
                                  for i, r in rep.worst(5)))
    if args.dump:
        Path(args.dump).write_text(json.dumps(rep.to_dict()))
    return rep.to_dict()


def _spec(args: argparse.Namespace, res: int, **kw: Any) -> SearchSpec:
    space = get_space(args.space)
    flops = space.budgets.flops * res * res / (space.budgets.height * space.budgets.width) \
        if space.budgets.flops else None
    budgets = Budgets(flops=flops, layers=space.budgets.layers, **kw.pop("budgets", {}))
    return SearchSpec(space=args.space, score="entropy-analytic", height=res, width=res, budgets=budgets,
                      population=256, **{"iterations": args.iterations, "seed": args.seed, **kw})


def section_search(path: Path, args: argparse.Namespace) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = load_profile(path)
    res = p.height
    runner = Runner(p.runtime, threads=p.threads, batch=p.batch, opset=p.opset)
    timing = TimingSettings(1, args.runs, args.runs, 0.0, p.clock)

    # warm-up (untimed): the process's first search pays one-time costs (imports, the optimality
    # certificate's tables for these budgets) that the timed searches below would otherwise not share
    Search(_spec(args, res, iterations=2000)).run()
    t0 = time.perf_counter()
    flops_only = Search(_spec(args, res)).run()
    t_flops = time.perf_counter() - t0
    lat_flops = runner.time_structure(flops_only.best_structure, res, res, timing).median_ms
    budget = 0.9 * lat_flops
    print(f"\nFLOPs-only: {t_flops:.1f} s, winner measured {lat_flops:.1f} ms", flush=True)

    t0 = time.perf_counter()
    spec = _spec(args, res, budgets={"latency_ms": budget}, latency=LatencySpec(profile=str(path), verify=args.verify))
    predicted = Search(spec).run()
    t_pred = time.perf_counter() - t0
    lat = predicted.latency or {}
    w = lat["candidates"][lat["winner"]]
    print(f"predicted: {t_pred:.1f} s (verify {lat['seconds']:.1f} s), winner measured {w['measured_ms']:.1f} ms",
          flush=True)

    # the same predicted search measuring only after it ends (latency.speculate off), same run
    t0 = time.perf_counter()
    quiet = Search(replace(spec, latency=replace(spec.latency, speculate=False))).run()
    t_quiet = time.perf_counter() - t0
    lat_q = quiet.latency or {}

    # measured mode: the existing path (each candidate's torch backbone timed), on a few candidates; its
    # budget is loose (only the time per candidate matters here, and torch's wall clock is not the
    # profile's clock, so a budget from the profile could reject the start)
    n = args.measured
    mspec = SearchSpec(space=args.space, score="entropy-analytic", height=res, width=res,
                       budgets=Budgets(flops=spec.budgets.flops, layers=spec.budgets.layers, latency_ms=6e5),
                       population=16, iterations=n, generation=min(16, n), seed=args.seed, warmup_iterations=0)
    backend = LocalBackend(threads=1)
    t0 = time.perf_counter()
    Search(mspec, backend=backend).run()
    t_meas = time.perf_counter() - t0
    per_cand = t_meas / n

    print(f"\n## c. Search speed ({args.iterations} iterations, population 256, {args.space} at {res}, "
          f"FLOPs + layers budgets; latency budget 0.9 x the FLOPs-only winner's measured "
          f"{lat_flops:.1f} ms = {budget:.1f} ms)\n")
    print("| mode | wall s | of which verify s | s per candidate | vs FLOPs-only |")
    print("|---|---|---|---|---|")
    print(f"| FLOPs-only (baseline) | {t_flops:.1f} | - | {t_flops / args.iterations * 1e3:.3f} ms | 1.00x |")
    t_search = t_pred - lat["seconds"]
    print(f"| predicted latency: the search (measuring the top on the idle core: {lat['measured_during_search']} "
          f"of the top-k measured, {lat['seconds_during_search']:.1f} s) | {t_search:.1f} | - | "
          f"{t_search / args.iterations * 1e3:.3f} ms | {t_search / t_flops:.2f}x |")
    print(f"| predicted latency: end to end, top-{len(lat['candidates'])} verification ({args.verify}: {lat['measured']} "
          f"measured, {lat['measured_during_search']} of them while the search ran) | {t_pred:.1f} | "
          f"{lat['seconds']:.1f} | {t_pred / args.iterations * 1e3:.3f} ms | {t_pred / t_flops:.2f}x |")
    print(f"| predicted latency, measuring only after the search (`--no-speculate`): the search | "
          f"{t_quiet - lat_q['seconds']:.1f} | - | {(t_quiet - lat_q['seconds']) / args.iterations * 1e3:.3f} ms | "
          f"{(t_quiet - lat_q['seconds']) / t_flops:.2f}x |")
    print(f"| predicted latency, measuring only after the search: end to end ({lat_q['measured']} measured) | "
          f"{t_quiet:.1f} | {lat_q['seconds']:.1f} | {t_quiet / args.iterations * 1e3:.3f} ms | "
          f"{t_quiet / t_flops:.2f}x |")
    print(f"| measured latency ({n} candidates timed, torch) | {t_meas:.1f} | - | {per_cand:.2f} s | "
          f"{per_cand * args.iterations / t_flops:.0f}x (extrapolated to {args.iterations}: "
          f"{per_cand * args.iterations / 3600:.1f} h) |")
    print("\nverified candidates (predicted vs measured ms): " + ", ".join(
        f"{c['predicted_ms']:.1f}/" + ("-" if c["measured_ms"] is None else f"{c['measured_ms']:.1f}")
        for c in lat["candidates"]))

    print("\n## d. What the user gets\n")
    print("| search | entropy score | FLOPs G | measured ms | vs FLOPs winner |")
    print("|---|---|---|---|---|")
    print(f"| FLOPs-budgeted winner | {flops_only.best_score:.2f} | {flops_only.best_costs['flops'] / 1e9:.2f} | "
          f"{lat_flops:.1f} | 1.00x |")
    print(f"| latency-budgeted winner | {predicted.best_score:.2f} | {predicted.best_costs['flops'] / 1e9:.2f} | "
          f"{w['measured_ms']:.1f} | {w['measured_ms'] / lat_flops:.2f}x latency, "
          f"{predicted.best_score - flops_only.best_score:+.2f} score |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", help="a built profile (skip section a's build)")
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--resolution", type=int, default=480)
    ap.add_argument("--clock", default="wall", help="wall | cpu (thread CPU time: a loaded shared machine)")
    ap.add_argument("--space", default="detection-k1kxk1")
    ap.add_argument("--structures", type=int, default=200)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--measured", type=int, default=16, help="candidates timed in the measured mode")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify", default="until-met", choices=["until-met", "all"], help="latency.verify of section c")
    ap.add_argument("--only", choices=["a", "b", "c"], help="a: build; b: a + accuracy; c: a + search")
    ap.add_argument("--dump", help="write the accuracy rows as JSON here")
    args = ap.parse_args()
    print("machine:", json.dumps(machine()))
    path = section_build(args)
    if args.only in (None, "b"):
        section_accuracy(path, args)
    if args.only in (None, "c"):
        section_search(path, args)


if __name__ == "__main__":
    main()
