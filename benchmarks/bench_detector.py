"""Detector-scope budgets: search speed against backbone scope (same run), and what the budget buys.

    python benchmarks/bench_detector.py              # 20,000 iterations per run, 3 interleaved repeats
    python benchmarks/bench_detector.py --iterations 5000 --repeats 1

a. Search speed: the MAE-DET setting (detection-k1kxk1, entropy-analytic, 480x480, population 256,
   warm-up default, seed 0) through ``run_search``, in backbone scope (FLOPs <= 188e8, layers <= 91,
   the baseline) and in detector scope (GFL + GFPN depth 7 width 0.7, 80 classes, FLOPs budget =
   188e8 + the neck and head of the MAE-DET-S backbone's detector, layers <= 91), interleaved; wall
   and CPU seconds per 1k trials, ratio detector / backbone (target <= 1.5x). The path timed is the
   one users run (``zennas search ... --budget-scope detector``).
b. What the scope changes: for the best structure of each run, the whole detector's FLOPs against
   the detector budget, and the backbone's share.
c. Neck co-search (space giraffe-s2d-gfpn, score neck-entropy-analytic, detector scope) against a
   backbone search with a hand-picked neck (GiraffeDet's GFPN depth 7, width 0.7; space giraffe-s2d,
   entropy-analytic, detector scope: the same total budget), at two budgets: the MAE-DET setting's
   translated to the whole GFL detector at 480x480 (the budget of section a) and GiraffeDet-D7's at
   768x1280 (its published S2D backbone + GFPN-D7 + GFL head, counted by zennas). Reported: the neck
   chosen, the backbone's share of the detector's FLOPs, the neck-entropy score (closed form) of
   the result. No trained accuracy backs the neck score yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
from _common import header, section, table

from zennas.detector import DetectorSettings, detector_costs
from zennas.search import Budgets, SearchSpec, run_search
from zennas.space import Block, Structure, load_structure

ROOT = Path(__file__).resolve().parents[1]
DET = DetectorSettings(detector="gfl", neck="gfpn", gfpn_depth=7, gfpn_width=0.7, num_classes=80)
RES = 480
BACKBONE_FLOPS = 188e8  # the MAE-DET budget (MACs + BN/act ops at 480x480)


def _spec(scope: str, flops: float, iterations: int) -> SearchSpec:
    return SearchSpec(space="detection-k1kxk1", score="entropy-analytic", height=RES, width=RES,
                      budgets=Budgets(flops=flops, layers=91, scope=scope), detector=DET,
                      population=256, iterations=iterations, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cosearch-iterations", type=int, default=5000)
    ap.add_argument("--only", choices=["c"], default=None)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    header("Detector-scope budgets")
    ref = detector_costs(load_structure(ROOT / "examples" / "maedet_s.txt"), DET, RES, RES)
    det_flops = BACKBONE_FLOPS + ref.neck.flops + ref.head.flops
    print(f"detector budget: {det_flops / 1e9:.3f} GFLOPs = 18.8 (backbone budget) + neck "
          f"{ref.neck.flops / 1e9:.3f} + head {ref.head.flops / 1e9:.3f} of MAE-DET-S's GFL+GFPN-D7 detector")
    d7 = detector_costs(GIRAFFE_D7_BACKBONE, DET, 768, 1280).total.flops
    print(f"GiraffeDet-D7 budget: {d7 / 1e9:.3f} GFLOPs (its S2D backbone + GFPN-D7/0.7 + GFL head, as zennas "
          "builds it, at 768x1280)")
    if args.only == "c":
        cosearch(args.cosearch_iterations, d7, det_flops)
        return
    runs: dict[str, list[tuple[float, float]]] = {"backbone": [], "detector": []}
    results = {}
    for _ in range(args.repeats):
        for scope, flops in (("backbone", BACKBONE_FLOPS), ("detector", det_flops)):
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_search(_spec(scope, flops, args.iterations))
            runs[scope].append((time.perf_counter() - t0, time.process_time() - c0))
            results[scope] = res
    section(f"a. Search speed, {args.iterations} iterations, best of {args.repeats} (interleaved)")
    k = args.iterations / 1000
    best = {s: (min(w for w, _ in v), min(c for _, c in v)) for s, v in runs.items()}
    rows = [[s, f"{best[s][0]:.2f}", f"{best[s][1]:.2f}", f"{best[s][0] / k * 1e3:.1f}",
             f"{best[s][0] / best['backbone'][0]:.3f}x", f"{best[s][1] / best['backbone'][1]:.3f}x"]
            for s in ("backbone", "detector")]
    table(["scope", "wall s", "CPU s", "ms / 1k trials", "wall ratio", "CPU ratio"], rows)
    section("b. The best structure of each run, as a whole detector (GFL + GFPN-D7, 80 classes, 480x480)")
    rows = []
    for scope, res in results.items():
        d = detector_costs(res.best_structure, DET, RES, RES)
        rows.append([scope, f"{res.best_score:.2f}", f"{d.backbone.flops / 1e9:.3f}", f"{d.total.flops / 1e9:.3f}",
                     f"{det_flops / 1e9:.3f}", "yes" if d.total.flops <= det_flops else "NO",
                     f"{d.backbone.flops / d.total.flops:.1%}"])
    table(["scope", "best score", "backbone GFLOPs", "detector GFLOPs", "detector budget", "within",
           "backbone share"], rows)
    cosearch(args.cosearch_iterations, d7, det_flops)


GIRAFFE_D7_BACKBONE = Structure((  # damo-cv/GiraffeDet space2depth_chain.py: 2 convs, 5 S2D blocks
    Block("ConvKXBNRELU", 3, 32, 2, 3), Block("ConvKXBNRELU", 32, 64, 2, 3),
    Block("S2D", 64, 128, 2, 1, 1), Block("S2D", 128, 256, 2, 1, 1), Block("S2D", 256, 512, 2, 1, 1),
    Block("S2D", 512, 1024, 2, 1, 1), Block("S2D", 1024, 2048, 2, 1, 1),
))


def cosearch(iterations: int, d7_flops: float, maedet_flops: float) -> None:
    from zennas.score.neck import neck_entropy_analytic
    from zennas.search.neck import NECK_SCORE

    section(f"c. Neck co-search vs a hand-picked neck at the same whole-detector budget ({iterations} iterations)")
    hand = DetectorSettings(gfpn_depth=7, gfpn_width=0.7)
    rows = []
    for label, flops, h, w in (("MAE-DET budget, 480x480", maedet_flops, 480, 480),
                               ("GiraffeDet-D7 budget, 768x1280", d7_flops, 768, 1280)):
        for how in ("co-search", "hand-picked D7/0.7"):
            spec = SearchSpec(space="giraffe-s2d-gfpn" if how == "co-search" else "giraffe-s2d",
                              score=NECK_SCORE if how == "co-search" else "entropy-analytic", height=h, width=w,
                              budgets=Budgets(flops=flops, layers=32, scope="detector"), detector=hand,
                              population=256, iterations=iterations, seed=0)
            t0 = time.perf_counter()
            res = run_search(spec)
            secs = time.perf_counter() - t0
            det = hand
            if "neck_choice" in res.best_costs:
                nc = res.best_costs["neck_choice"]
                det = DetectorSettings(gfpn_depth=nc["gfpn_depth"], gfpn_width=nc["gfpn_width"])
            d = detector_costs(res.best_structure, det, h, w)
            rows.append([label, how, f"{det.gfpn_depth} / {det.gfpn_width}", f"{d.total.flops / 1e9:.2f}",
                         f"{flops / 1e9:.2f}", f"{d.backbone.flops / d.total.flops:.1%}",
                         f"{neck_entropy_analytic(res.best_structure, det).score:.1f}", f"{secs:.1f}"])
    table(["budget", "search", "GFPN depth / width", "detector GFLOPs", "budget GFLOPs", "backbone share",
           "neck score", "seconds"], rows)


if __name__ == "__main__":
    main()
